"""Speed of the six methods side by side: images/s end to end through the one inference loop (loading, model,
smoothing, the four paper metrics), the paper's compute table beside it (revised Table 8, an RTX 3090).

Usage:
  python benchmarks/bench_methods.py                       # tiny backbones, CPU (always measurable)
  python benchmarks/bench_methods.py --paper --device cuda  # the paper's backbones at their sizes, random weights
Random weights throughout: nothing is downloaded, and the numbers say nothing about detection quality.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import synthetic  # noqa: E402

from anomalyclip.config import AnomalyCLIPConfig, VisionConfig  # noqa: E402
from anomalyclip.engine import evaluate  # noqa: E402
from anomalyclip.methods import METHODS, build_detector  # noqa: E402
from anomalyclip.methods.vand import VANDConfig  # noqa: E402
from anomalyclip.methods.winclip import WinCLIPConfig  # noqa: E402

PAPER_FPS = {"clip": 13.23, "winclip": 1.2, "anomalyclip": 8.92}
"""Inference speed in the paper's revised Table 8 (one RTX 3090, batch 1, fp32)."""


def configs(paper: bool, size: int) -> dict[str, object]:
    """Each method's configuration: the paper's backbones and sizes (random weights), or the tiny stand-ins."""
    backbone, pretrained = ("ViT-L-14-336", "none") if paper else ("tiny", None)
    image_size = 518 if paper else size
    prompted = AnomalyCLIPConfig(backbone=backbone, pretrained=pretrained, vision=VisionConfig(image_size=image_size))
    winclip = WinCLIPConfig(backbone="ViT-B-16-plus-240", pretrained="none") if paper else WinCLIPConfig(
        backbone="tiny-winclip", pretrained=None)  # fmt: skip
    vand = VANDConfig(backbone=backbone, pretrained=pretrained, image_size=image_size)
    return {"winclip": winclip, "vand": vand} | {m: prompted for m in ("clip", "clip_ac", "coop", "anomalyclip")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="ViT-L/14@336 at 518 px, ViT-B/16+ at 240 px")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=224, help="input size of the tiny runs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    print(f"{'paper backbones' if args.paper else 'tiny backbones'}, {where}, {args.precision}, "
          f"batch {args.batch_size}, {args.images} images, torch {torch.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        records = synthetic(Path(tmp), args.images)
        table = configs(args.paper, args.size)
        for method in METHODS:
            detector = build_detector(method, config=table[method], device=args.device)
            warm_up = records[: args.batch_size]
            evaluate(
                detector, warm_up, batch_size=args.batch_size, num_workers=0, precision=args.precision, progress=False
            )
            start = time.perf_counter()
            result = evaluate(detector, records, batch_size=args.batch_size, num_workers=args.workers,
                              precision=args.precision, progress=False)  # fmt: skip
            seconds = time.perf_counter() - start
            paper = f"   paper (RTX 3090): {PAPER_FPS[method]:5.2f} img/s" if method in PAPER_FPS else ""
            print(f"{METHODS[method].title:12s} {detector.image_size:4d} px  {result.images / seconds:8.2f} img/s"
                  f"{paper}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
