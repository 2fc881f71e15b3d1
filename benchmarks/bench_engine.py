"""Engine speed: the feature cache against the official every-epoch backbone pass, evaluation images/s, peak RSS.

Usage:
  python benchmarks/bench_engine.py train [--size 518] [--images 8]      # tiny CLIP, synthetic data, CPU
  python benchmarks/bench_engine.py evaluate [--backbone tiny|ViT-L-14-336] [--device cuda] [--images 64]
  python benchmarks/bench_engine.py memory [--images 1725]               # MVTec-sized run of the tiny model
Random weights throughout: nothing is downloaded. Timings include data loading and, for evaluate, the metrics.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from anomalyclip.backbone import TINY, load_backbone
from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.data import load_records
from anomalyclip.data.synth import make_synthetic_dataset
from anomalyclip.engine import evaluate, train
from anomalyclip.model import AnomalyCLIP


def synthetic(root: Path, images: int, categories: int = 4, image_size: int = 256) -> list:
    """About `images` test records over `categories` folders (real synthetic categories repeated as links)."""
    per_category = max(2, images // categories)
    make_synthetic_dataset(root / "base", n_train=1, n_test_good=per_category // 2,
                           n_test_defect=per_category - per_category // 2, image_size=image_size)  # fmt: skip
    bases = sorted(p for p in (root / "base").iterdir() if p.is_dir())
    (root / "set").mkdir()
    for k in range(categories):
        (root / "set" / f"category_{k:02d}").symlink_to(bases[k % len(bases)].resolve(), target_is_directory=True)
    return load_records(root / "set", "generic", "test")[:images]


def model_for(backbone: str, size: int, epochs: int, device: str, clip=None) -> AnomalyCLIP:
    pretrained = None if backbone == TINY else "none"  # random weights: nothing is downloaded
    config = AnomalyCLIPConfig(backbone=backbone, pretrained=pretrained, vision=VisionConfig(image_size=size),
                               train=TrainConfig(epochs=epochs))  # fmt: skip
    return AnomalyCLIP(clip or load_backbone(backbone, pretrained, device=device), config).to(device)


def bench_train(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = synthetic(Path(tmp), args.images, categories=1)
        clip = load_backbone("tiny")
        runs = {}
        for label, epochs, cache in (("1 epoch, no cache", 1, "none"), ("15 epochs, cache", 15, "memory"),
                                     ("15 epochs, no cache", 15, "none")):  # fmt: skip
            model = model_for("tiny", args.size, epochs, "cpu", clip)
            start = time.perf_counter()
            train(model, records, Path(tmp) / label.replace(" ", "_"), cache=cache, num_workers=0, progress=False)
            runs[label] = time.perf_counter() - start
            print(f"{label:22s} {runs[label]:8.1f} s", flush=True)
    print(f"tiny CLIP, {len(records)} synthetic images at {args.size} px, batch 8, CPU x{torch.get_num_threads()}")
    print(f"15 cached epochs / 1 uncached epoch: {runs['15 epochs, cache'] / runs['1 epoch, no cache']:.2f}x "
          f"(target <= 2)")  # fmt: skip
    print(f"uncached / cached, 15 epochs: {runs['15 epochs, no cache'] / runs['15 epochs, cache']:.1f}x (target >= 5)")


def bench_evaluate(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = synthetic(Path(tmp), args.images)
        model = model_for(args.backbone, args.size, 1, args.device)
        options = {"batch_size": args.batch_size, "num_workers": args.workers, "precision": args.precision}
        evaluate(model, records[:8], progress=False, **options)
        result = evaluate(model, records, progress=False, **options)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    print(f"{args.backbone} at {args.size} px, batch {args.batch_size}, {args.precision}, {name}: "
          f"{result.images} images in {result.seconds:.1f} s = {result.images_per_second:.1f} images/s "
          "(loading, model, smoothing and the four paper metrics)")  # fmt: skip


def bench_memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = synthetic(Path(tmp), args.images, categories=15)
        model = model_for("tiny", args.size, 1, args.device)
        before = _peak_rss_mib()
        result = evaluate(model, records, batch_size=args.batch_size, num_workers=args.workers, progress=False)
    peak = _peak_rss_mib()
    print(f"tiny CLIP, {result.images} images in 15 categories at {args.size} px, {args.device}: "
          f"{result.seconds:.0f} s; peak RSS {peak:.0f} MiB (before evaluation {before:.0f} MiB)")  # fmt: skip


def _peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["train", "evaluate", "memory"])
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--images", type=int)
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on a GPU, fp32 on a CPU")
    args = parser.parse_args()
    defaults = {"train": 8, "evaluate": 64, "memory": 1725}
    args.images = args.images or defaults[args.what]
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    {"train": bench_train, "evaluate": bench_evaluate, "memory": bench_memory}[args.what](args)


if __name__ == "__main__":
    main()
