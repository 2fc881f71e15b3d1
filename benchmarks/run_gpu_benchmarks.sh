#!/usr/bin/env bash
# The GPU benchmarks in one go (random weights, nothing downloaded). Run from the repository root:
#   bash benchmarks/run_gpu_benchmarks.sh          # on a CUDA machine, within BUDGET_S seconds (default 580: one
#                                                  # command of at most 600 s, the wheels' install included)
#   bash benchmarks/run_gpu_benchmarks.sh --quick  # parts 1-3 on the CPU, tiny CLIP, small sizes: 51 s on the
#                                                  # 2 development cores at a load of 2 (11 min at a load of 8)
# Where open_clip is not installed, put its wheels (open_clip_torch, ftfy, wcwidth, regex) in .whl/ first.
#
# Parts run in this order, the ones never recorded first; each prints its wall time. A part starts only when the
# least time worth giving it (its first number below) is left of BUDGET_S, and is stopped when the budget runs out,
# so the run ends within it. Estimates for one H200 with 16 cores, guessed from the numbers recorded in
# benchmarks/README.md (model 209 images/s in bf16 at batch 8, 26 in fp32 at batch 1; evaluation end to end 72
# images/s) and the CPU costs measured on the development machine; the run's own output replaces them:
#   0. installing the wheels of .whl/, if any                                 ~15 s
#   1. fp32 vs bf16, 256 images, ViT-L/14@336 at 518 px                       ~45 s  (model build ~15 s, loops 6 + 4 s)
#   2. official-style loop vs ours, 128 images                                ~55 s  (official ~0.2 s per image: batch
#      1 fp32 forward 38 ms, CPU smoothing ~10 ms, AUPRO loop ~100 ms per map, sklearn AUROC on 8.6 M pixels a category)
#   3. the protocol at scale 1: 22,893 stand-in images, 2 jobs, 15 epochs    ~420 s  (trainings of ~1-2 min each:
#      feature cache of 2,162 / 1,725 images, 271 / 216 steps per epoch; 22,893 evaluations at ~80-120 images/s in
#      84 category loops). Started with at least 150 s left: the smaller job (VisA-sized -> MVTec-AD-sized, ~130 s)
#      runs first and prints its times as soon as it ends.
#   Parts 0-3 take ~535 s of the default budget. The parts recorded before (benchmarks/README.md) follow when time
#   is left (BUDGET_S=900, in a command allowed that long, runs them all):
#   4. forward, bf16, batch 8, both backbones                                 ~40 s
#   5. forward, fp32, batch 1, ViT-L/14@336                                   ~30 s
#   6. evaluation end to end, bf16 512 images and fp32 256 images             ~60 s
#   7. the six methods, paper backbones, 256 images                           ~120 s
#   8. memory of an MVTec-sized evaluation of the tiny model                  ~35 s
set -euo pipefail
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; fi
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
BUDGET_S=${BUDGET_S:-580}

part() {  # part MIN_S TITLE COMMAND...: run COMMAND if MIN_S seconds of the budget are left, stop it at its end
  local least=$1 title=$2 start=$SECONDS left=$((BUDGET_S - SECONDS))
  shift 2
  if [ "$left" -lt "$least" ] || [ "$left" -le 0 ]; then
    echo "## $title: skipped (${left} s of the budget left, it needs ${least} s)"
    return
  fi
  echo "## $title"
  local status=0
  timeout --foreground "$left" "$@" || status=$?
  [ "$status" -eq 0 ] || echo "!! exit status $status (124: stopped at the end of the budget)"
  echo "-- $((SECONDS - start)) s (${SECONDS} s since the start)"
}

if [ "$QUICK" = 1 ]; then
  BUDGET_S=100000
  part 0 "1. fp32 vs bf16 through the one inference loop (tiny, CPU)" \
    python3 benchmarks/bench_engine.py precision --device cpu --size 112 --images 16 --workers 2
  part 0 "2. official-style loop vs ours (tiny, CPU)" \
    python3 benchmarks/bench_engine.py official --device cpu --size 112 --images 16 --workers 2
  part 0 "3. the protocol of Tables 1-2 on stand-ins at scale 0.02 (tiny at 112 px, CPU)" \
    python3 benchmarks/bench_protocol.py --device cpu --backbone tiny --size 112 --scale 0.02 --source-size 128
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
part 45 "1. fp32 vs bf16 through the one inference loop, ViT-L/14@336 at 518 px, batch 8" \
  python3 benchmarks/bench_engine.py precision --backbone ViT-L-14-336 --device cuda --images 256 --workers 12
part 55 "2. the official test.py's loop (batch 1, fp32, CPU smoothing, official metrics) vs ours (batch 8, bf16)" \
  python3 benchmarks/bench_engine.py official --backbone ViT-L-14-336 --device cuda --images 128 --workers 12 \
    --precision bf16
part 150 "3. the protocol of Tables 1-2 on stand-ins of the 17 datasets at scale 1: ViT-L/14@336, 518 px, bf16" \
  python3 benchmarks/bench_protocol.py --device cuda --precision bf16 --workers 12 --scale 1
part 40 "4. forward, bf16, batch 8 (plain CLIP path vs DPAM)" \
  python3 benchmarks/bench_model.py --device cuda --batch 8 --repeats 10
part 30 "5. forward, fp32, batch 1 (the official code's setting: one image at a time, fp32)" \
  python3 benchmarks/bench_model.py --device cuda --batch 1 --repeats 10 --fp32 --models ViT-L-14-336
part 60 "6. evaluation end to end through the one inference loop (loading, model, smoothing, metrics), bf16 and fp32" \
  bash -c "python3 benchmarks/bench_engine.py evaluate --backbone ViT-L-14-336 --device cuda --images 512 \
    --workers 12 --precision bf16 && python3 benchmarks/bench_engine.py evaluate --backbone ViT-L-14-336 \
    --device cuda --images 256 --workers 12 --precision fp32"
part 120 "7. the six methods side by side on the paper's backbones (random weights), bf16" \
  python3 benchmarks/bench_methods.py --paper --device cuda --images 256 --workers 12 --precision bf16
part 35 "8. memory: an MVTec-sized evaluation of the tiny model" \
  python3 benchmarks/bench_engine.py memory --device cuda --workers 12
