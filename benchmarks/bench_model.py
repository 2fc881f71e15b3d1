"""Milliseconds per image of the AnomalyCLIP forward, plain CLIP path vs DPAM, on the current device.

Usage: python benchmarks/bench_model.py [--device cuda] [--models tiny,ViT-L-14-336] [--batch 8] [--size 518]
Random weights (nothing is downloaded); on a GPU the forward runs under bf16 autocast.
"""

from __future__ import annotations

import argparse
import time

import torch

from anomalyclip.backbone import load_backbone
from anomalyclip.config import AnomalyCLIPConfig, VisionConfig
from anomalyclip.model import AnomalyCLIP


def time_forward(model: AnomalyCLIP, images: torch.Tensor, repeats: int, device: str, fp32: bool = False) -> float:
    """Median ms per image over `repeats` timed batches after one warm-up."""
    text = model.text_features().detach()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda") and not fp32)
    times = []
    with torch.no_grad(), autocast:
        for i in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(images, text)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2] / images.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="tiny,ViT-L-14-336")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on a GPU (the official precision)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    precision = "fp32" if args.fp32 or not args.device.startswith("cuda") else "bf16 autocast"
    print(f"device: {name}; batch {args.batch}; {args.size} px; {precision}; torch {torch.__version__}")
    for backbone in args.models.split(","):
        clip = load_backbone(backbone, None if backbone == "tiny" else "none", device=args.device)
        images = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
        results = {}
        for label, blocks in (("plain", 0), ("dpam", 19)):
            config = AnomalyCLIPConfig(backbone=backbone, pretrained=None,
                                       vision=VisionConfig(image_size=args.size, dpam_blocks=blocks))  # fmt: skip
            results[label] = time_forward(
                AnomalyCLIP(clip, config).to(args.device), images, args.repeats, args.device, args.fp32
            )
        overhead = 100 * (results["dpam"] / results["plain"] - 1)
        print(f"{backbone:14s} plain {results['plain']:8.1f} ms/img   DPAM {results['dpam']:8.1f} ms/img   "
              f"DPAM overhead {overhead:+.1f}%   ({1000 / results['dpam']:.1f} img/s)")  # fmt: skip


if __name__ == "__main__":
    main()
