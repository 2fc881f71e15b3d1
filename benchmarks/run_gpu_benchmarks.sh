#!/usr/bin/env bash
# The GPU benchmarks in one go (random weights, nothing downloaded). Run from the repository root on a CUDA machine.
# Where open_clip is not installed, put its wheels (open_clip_torch, ftfy, wcwidth, regex) in .whl/ first.
set -euo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "## forward, bf16, batch 8 (plain CLIP path vs DPAM)"
python3 benchmarks/bench_model.py --device cuda --batch 8 --repeats 10
echo "## forward, fp32, batch 1 (the official code's setting: one image at a time, fp32)"
python3 benchmarks/bench_model.py --device cuda --batch 1 --repeats 10 --fp32 --models ViT-L-14-336
echo "## evaluation end to end through the one inference loop (loading, model, smoothing, metrics), bf16 and fp32"
python3 benchmarks/bench_engine.py evaluate --backbone ViT-L-14-336 --device cuda --images 512 --workers 12 --precision bf16
python3 benchmarks/bench_engine.py evaluate --backbone ViT-L-14-336 --device cuda --images 256 --workers 12 --precision fp32
echo "## the six methods side by side on the paper's backbones (random weights), bf16"
python3 benchmarks/bench_methods.py --paper --device cuda --images 256 --workers 12 --precision bf16
echo "## memory: an MVTec-sized evaluation of the tiny model"
python3 benchmarks/bench_engine.py memory --device cuda --workers 12
