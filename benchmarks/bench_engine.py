"""Engine speed: the feature cache against the official every-epoch backbone pass, evaluation images/s, peak RSS,
fp32 against bf16, and our evaluation against the official test.py's way of evaluating.

Usage:
  python benchmarks/bench_engine.py train [--size 518] [--images 8]      # tiny CLIP, synthetic data, CPU
  python benchmarks/bench_engine.py evaluate [--backbone tiny|ViT-L-14-336] [--device cuda] [--images 64]
  python benchmarks/bench_engine.py memory [--images 1725]               # MVTec-sized run of the tiny model
  python benchmarks/bench_engine.py precision [--backbone ...] [--images 64]  # fp32 and bf16 on the same images
  python benchmarks/bench_engine.py official [--backbone ...] [--images 32]   # official-style loop against ours
Random weights throughout: nothing is downloaded. Timings include data loading and, for evaluate, the metrics.

`precision` runs the one inference loop (`engine.inference.score_categories`: loading, model, smoothing) in fp32,
the faithful setting, and in bf16 on the same images, and prints the images/s of each and the largest absolute
differences between their anomaly maps and between their image scores.
`official` times the official test.py's way (FACTS §1.5, §1.8) on the same images as our `evaluate`: one image at a
time in fp32, each raw map smoothed on the CPU by scipy's gaussian_filter (sigma 4), then per category sklearn's
pixel and image AUROC and image AP and the official AUPRO (`cal_pro_score`, the loop oracle of tests/test_metrics.py),
and prints both images/s, their ratio, the largest difference of their per-category metrics and both mean rows (the
official mean is NaN where a category's metric is; ours leaves such a category out and says so).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_metrics import official_aupro_loop  # noqa: E402

from anomalyclip.backbone import TINY, load_backbone  # noqa: E402
from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig  # noqa: E402
from anomalyclip.data import Record, load_records  # noqa: E402
from anomalyclip.data.synth import make_synthetic_dataset  # noqa: E402
from anomalyclip.engine import evaluate, train  # noqa: E402
from anomalyclip.engine.inference import check_precision, score_categories  # noqa: E402
from anomalyclip.methods import Detector, as_detector  # noqa: E402
from anomalyclip.metrics import PAPER_METRICS  # noqa: E402
from anomalyclip.model import AnomalyCLIP  # noqa: E402


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
    print(f"{args.backbone} at {args.size} px, batch {args.batch_size}, {args.precision}, {device_name(args.device)}: "
          f"{result.images} images in {result.seconds:.1f} s = {result.images_per_second:.1f} images/s "
          "(loading, model, smoothing and the four paper metrics)")  # fmt: skip


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"


def scored(detector: Detector, records: list[Record], args: argparse.Namespace, precision: str) -> tuple:
    """(seconds, maps, image scores) of the one inference loop over `records` in `precision`, in the loop's order."""
    options = {"batch_size": args.batch_size, "num_workers": args.workers, "precision": check_precision(precision)}
    for _, batches in score_categories(detector, records[: args.batch_size], progress=False, **options):
        for _ in batches:  # warm-up: kernels of this precision, worker start
            pass
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    maps, scores = [], []
    for _, batches in score_categories(detector, records, progress=False, **options):
        for batch in batches:
            maps.append(batch.maps)
            scores.append(batch.image_scores)
    return time.perf_counter() - start, np.concatenate(maps), np.concatenate(scores)


def bench_precision(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = synthetic(Path(tmp), args.images)
        detector = as_detector(model_for(args.backbone, args.size, 1, args.device))
        runs = {precision: scored(detector, records, args, precision) for precision in ("fp32", "bf16")}
    categories = len({r.category for r in records})
    print(f"{args.backbone} at {args.size} px, batch {args.batch_size}, {device_name(args.device)}: {len(records)} "
          f"images in {categories} categories through the one inference loop (loading, model, smoothing)")  # fmt: skip
    for precision, (seconds, _, _) in runs.items():
        print(f"{precision}  {len(records)} images in {seconds:.1f} s = {len(records) / seconds:.1f} images/s")
    (_, maps32, scores32), (_, maps16, scores16) = runs["fp32"], runs["bf16"]
    gap = np.abs(maps16 - maps32)
    print(f"bf16 - fp32 on the same images: largest |difference| of the anomaly maps {gap.max():.3e} "
          f"(mean {gap.mean():.3e}; fp32 maps span {maps32.min():.4f} to {maps32.max():.4f}), "
          f"of the image scores {np.abs(scores16 - scores32).max():.3e}")  # fmt: skip


def official_style(model: AnomalyCLIP, records: list[Record]) -> tuple[float, dict[str, dict[str, float]]]:
    """(seconds, metrics per category) of the official test.py's way: batch 1, fp32, scipy smoothing per map on the
    CPU, per category sklearn's AUROC and AP on all pixels and on the images and the official AUPRO loop."""
    detector = as_detector(model)
    sigma, detector.sigma = detector.sigma, 0.0  # the loop hands back raw maps; they are smoothed below, one by one
    start = time.perf_counter()
    per_category = {}
    for category, batches in score_categories(detector, records, batch_size=1, num_workers=0, precision="fp32",
                                              progress=False):  # fmt: skip
        masks, maps, labels, scores = [], [], [], []
        for batch in batches:
            maps.append(gaussian_filter(batch.maps[0], sigma=sigma))
            masks.append(batch.masks[0])
            labels.append(batch.labels[0])
            scores.append(batch.image_scores[0])
        masks, maps = np.stack(masks), np.stack(maps)
        per_category[category] = {
            "pixel_auroc": roc_auc_score(masks.ravel(), maps.ravel()),
            "pixel_aupro": official_aupro_loop(masks, maps),
            "image_auroc": roc_auc_score(labels, scores),
            "image_ap": average_precision_score(labels, scores),
        }
    return time.perf_counter() - start, per_category


def difference(ours: float, theirs: float) -> float:
    """|ours - theirs|: 0 where both are undefined (NaN), infinite where only one is."""
    if math.isnan(ours) or math.isnan(theirs):
        return 0.0 if math.isnan(ours) and math.isnan(theirs) else math.inf
    return abs(ours - theirs)


def bench_official(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = synthetic(Path(tmp), args.images)
        model = model_for(args.backbone, args.size, 1, args.device)
        options = {"batch_size": args.batch_size, "num_workers": args.workers, "precision": args.precision}
        evaluate(model, records[: args.batch_size], progress=False, **options)
        ours = evaluate(model, records, progress=False, **options)
        with warnings.catch_warnings():  # warm-up of batch 1 in fp32; two images may hold one class only
            warnings.simplefilter("ignore")
            official_style(model, records[:2])
        official_seconds, official = official_style(model, records)
    official_rate, our_rate = len(records) / official_seconds, ours.images_per_second
    table, means = ours.metrics.data, {m: np.mean([row[m] for row in official.values()]) for m in PAPER_METRICS}
    gap = max(difference(float(table.at[c, m]), row[m]) for c, row in official.items() for m in PAPER_METRICS)
    print(f"{args.backbone} at {args.size} px, {device_name(args.device)}: {len(records)} images in "
          f"{len({r.category for r in records})} categories, the four paper metrics")  # fmt: skip
    print(f"official-style loop (batch 1, fp32, scipy gaussian_filter per map on the CPU, sklearn AUROC/AP, the "
          f"cal_pro_score loop): {official_seconds:.1f} s = {official_rate:.2f} images/s")  # fmt: skip
    print(f"ours (batch {args.batch_size}, {args.precision}, {args.workers} workers, smoothing on {args.device}, "
          f"anomalyclip.metrics): {ours.seconds:.1f} s = {our_rate:.2f} images/s")  # fmt: skip
    print(f"ours / official-style: {our_rate / official_rate:.1f}x images/s")
    print(f"largest difference of the per-category metrics, ours ({args.precision}) - official-style (fp32): "
          f"{gap:.2e}")  # fmt: skip
    print("mean (ours)            " + "  ".join(f"{m} {table.at['mean', m]:.4f}" for m in PAPER_METRICS))
    print("mean (official-style)  " + "  ".join(f"{m} {means[m]:.4f}" for m in PAPER_METRICS))


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


MODES = {"train": (bench_train, 8), "evaluate": (bench_evaluate, 64), "memory": (bench_memory, 1725),
         "precision": (bench_precision, 64), "official": (bench_official, 32)}  # fmt: skip
"""Mode -> (function, default number of images)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=list(MODES))
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--images", type=int)
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on a GPU, fp32 on a CPU")
    args = parser.parse_args(argv)
    function, images = MODES[args.what]
    args.images = args.images or images
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    function(args)


if __name__ == "__main__":
    main()
