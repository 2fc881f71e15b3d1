#!/usr/bin/env bash
# The GPU benchmarks in one go (random weights, nothing downloaded). Run from the repository root:
#   bash benchmarks/run_gpu_benchmarks.sh          # on a CUDA machine, within BUDGET_S seconds (default 600)
#   bash benchmarks/run_gpu_benchmarks.sh --quick  # parts 1-3 on the CPU: tiny CLIP, small sizes (~2 min, 2 cores)
# Where open_clip is not installed, put its wheels (open_clip_torch, ftfy, wcwidth, regex) in .whl/ first.
#
# Parts run in this order, the ones never recorded first; each prints its wall time. A part starts only when its
# estimate fits in what is left of BUDGET_S and is stopped when the budget runs out, so the run ends within it.
# Estimates for one H200 with 16 cores, guessed from the numbers recorded in benchmarks/README.md (model 209 images/s
# in bf16 at batch 8, 26 in fp32 at batch 1; evaluation end to end 72 images/s) and the CPU costs measured here:
#   1. fp32 vs bf16, 512 images, ViT-L/14@336 at 518 px                      ~60 s  (model build 15, loops 10 + 7)
#   2. official-style loop vs ours, 256 images                               ~90 s  (official ~0.2 s/image: batch 1,
#      fp32 forward 38 ms, CPU smoothing ~10 ms, AUPRO loop ~100 ms per map, sklearn AUROC on 17 M pixels per category)
#   3. the protocol at scale 1: 22,893 stand-in images, 2 jobs of 15 epochs  ~420 s (2 trainings of ~1-2 min: feature
#      cache of 1,725 / 2,162 images and 216 / 271 steps per epoch; 22,893 evaluations at ~80-120 images/s)
#   Parts 1-3 fill the default budget. The parts recorded before (benchmarks/README.md) follow when time is left
#   (BUDGET_S=900 runs them all):
#   4. forward, bf16, batch 8, both backbones                                ~40 s
#   5. forward, fp32, batch 1, ViT-L/14@336                                  ~30 s
#   6. evaluation end to end, bf16 512 images and fp32 256 images            ~60 s
#   7. the six methods, paper backbones, 256 images                          ~120 s
#   8. memory of an MVTec-sized evaluation of the tiny model                 ~35 s
set -euo pipefail
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; fi
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
BUDGET_S=${BUDGET_S:-600}

part() {  # part ESTIMATE_S TITLE COMMAND...: run COMMAND if ESTIMATE_S fits in the budget left, stop it at its end
  local estimate=$1 title=$2 start=$SECONDS left=$((BUDGET_S - SECONDS))
  shift 2
  if [ "$left" -lt "$estimate" ]; then
    echo "## $title: skipped (${left} s of the budget left, estimate ${estimate} s)"
    return
  fi
  echo "## $title"
  local status=0
  timeout "$left" "$@" || status=$?
  [ "$status" -eq 0 ] || echo "!! exit status $status (124: stopped at the end of the budget)"
  echo "-- $((SECONDS - start)) s (${SECONDS} s since the start)"
}

if [ "$QUICK" = 1 ]; then
  BUDGET_S=100000
  part 0 "1. fp32 vs bf16 through the one inference loop (tiny, CPU)" \
    python3 benchmarks/bench_engine.py precision --device cpu --size 224 --images 32 --workers 2
  part 0 "2. official-style loop vs ours (tiny, CPU)" \
    python3 benchmarks/bench_engine.py official --device cpu --size 224 --images 32 --workers 2
  part 0 "3. the protocol of Tables 1-2 on stand-ins at scale 0.02 (tiny at 224 px, CPU)" \
    python3 benchmarks/bench_protocol.py --device cpu --backbone tiny --size 224 --scale 0.02 --source-size 128
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
part 60 "1. fp32 vs bf16 through the one inference loop, ViT-L/14@336 at 518 px, batch 8" \
  python3 benchmarks/bench_engine.py precision --backbone ViT-L-14-336 --device cuda --images 512 --workers 12
part 90 "2. the official test.py's loop (batch 1, fp32, CPU smoothing, official metrics) vs ours (batch 8, bf16)" \
  python3 benchmarks/bench_engine.py official --backbone ViT-L-14-336 --device cuda --images 256 --workers 12 \
    --precision bf16
part 420 "3. the protocol of Tables 1-2 on stand-ins of the 17 datasets at scale 1: ViT-L/14@336, 518 px, bf16" \
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
