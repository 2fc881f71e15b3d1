"""The whole protocol of the paper's Tables 1-2 for AnomalyCLIP on synthetic stand-ins of its 17 datasets: the wall
time of each job and of all, run through `anomalyclip.experiments` as `anomalyclip reproduce --profile paper` runs it.

Each stand-in has its dataset's real categories and test-split sizes (`DatasetSpec.test_sizes()`), shrunk by
`--scale`; its images are links to a small pool of synthetic images (`anomalyclip.data.synth`), so that making them
takes seconds. They are made under a temporary folder, with the run store, before any timing starts. The jobs are the
paper profile's (`anomalyclip/profiles/paper.yaml`: ViT-L/14@336 at 518 px, 15 epochs, seed 111): prompts learned on
the MVTec-AD-sized stand-in and evaluated on the 16 others, prompts learned on the VisA-sized one and evaluated on
the MVTec-AD-sized one (`protocol.table_jobs(PAPER, ...)`), each run by the local executor (`executors.execute`),
the smaller job first. A job's time includes building its model, the feature cache, 15 epochs and every evaluation.

Usage:
  python benchmarks/bench_protocol.py --device cuda --precision bf16 --workers 12   # the paper's sizes (scale 1)
  python benchmarks/bench_protocol.py --backbone tiny --size 112 --scale 0.02 --source-size 128  # CPU, ~30 s
Random weights (nothing is downloaded): the numbers say nothing about detection quality. Real images are larger
(700-1,600 px) than the stand-ins (`--source-size`), so decoding them costs more.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from anomalyclip.data.specs import DATASET_SPECS, PAPER_DATASETS
from anomalyclip.data.synth import SYNTH_CATEGORIES, make_synthetic_dataset
from anomalyclip.experiments import DataSource, Job, RunStore
from anomalyclip.experiments.executors import execute
from anomalyclip.experiments.plans import Setup
from anomalyclip.experiments.protocol import PAPER, table_jobs
from anomalyclip.reproduce import load_profile


def scaled(count: int, scale: float) -> int:
    """`count` images shrunk by `scale`, at least one where there was one."""
    return 0 if count == 0 else max(1, round(count * scale))


def image_pool(root: Path, per_kind: int, size: int) -> dict[str, tuple[list[Path], list[tuple[Path, Path]]]]:
    """Per synthetic category: `per_kind` normal images and `per_kind` (anomalous image, mask) pairs under `root`."""
    make_synthetic_dataset(root, n_train=0, n_test_good=per_kind, n_test_defect=per_kind, image_size=size)
    pool = {}
    for category in SYNTH_CATEGORIES:
        test = root / category / "test"
        defects = sorted(p for p in test.glob("*/*.png") if p.parent.name != "good")
        masks = [root / category / "ground_truth" / p.parent.name / f"{p.stem}_mask.png" for p in defects]
        pool[category] = (sorted((test / "good").glob("*.png")), list(zip(defects, masks, strict=True)))
    return pool


def stand_ins(root: Path, pool: dict, scale: float, max_categories: int | None) -> dict[str, DataSource]:
    """An MVTec-layout stand-in of every paper dataset under `root` (links into `pool`), as run-store sources."""
    sources = {}
    for name in PAPER_DATASETS:
        spec = DATASET_SPECS[name]
        for k, (category, (normal, anomalous)) in enumerate(list(spec.test_sizes().items())[:max_categories]):
            goods, defects = pool[SYNTH_CATEGORIES[k % len(SYNTH_CATEGORIES)]]
            folder = root / name / category
            (folder / "train" / "good").mkdir(parents=True)  # how the MVTec layout is recognised without normal tests
            for i in range(scaled(normal, scale)):
                _link(goods[i % len(goods)], folder / "test" / "good" / f"{i:04d}.png")
            for i in range(scaled(anomalous, scale)):
                image, mask = defects[i % len(defects)]
                _link(image, folder / "test" / "defect" / f"{i:04d}.png")
                _link(mask, folder / "ground_truth" / "defect" / f"{i:04d}_mask.png")
        sources[name] = DataSource(name, "generic", str(root / name), pixel_level=spec.pixel_level)
    return sources


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def paper_setup(args: argparse.Namespace, store: Path) -> Setup:
    """The paper profile's settings with random weights and this run's overrides, for AnomalyCLIP alone."""
    parameters = load_profile("paper").parameters
    backbone = args.backbone or parameters["backbone"]
    overrides = {"backbone": backbone, "pretrained": None if backbone == "tiny" else "none", "weights": None,
                 "device": args.device, "precision": args.precision, "methods": ("anomalyclip",),
                 "run_store": str(store)}  # fmt: skip
    overrides |= {k: v for k, v in (("image_size", args.size), ("epochs", args.epochs)) if v is not None}
    return Setup.from_mapping(parameters | overrides)


def images_of(job: Job) -> tuple[int, int]:
    """(training images, evaluated images) of a job."""
    train = 0 if job.train is None else len(job.train.records())
    return train, sum(len(t.records()) for t in job.targets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every test split (default 1)")
    parser.add_argument("--backbone", help="default: the paper profile's (ViT-L-14-336), random weights")
    parser.add_argument("--size", type=int, help="input size; default: the paper profile's (518)")
    parser.add_argument("--epochs", type=int, help="default: the paper profile's (15)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--max-categories", type=int, help="at most this many categories per dataset (quick runs)")
    parser.add_argument("--pool", type=int, default=8, help="distinct images per kind per synthetic category")
    parser.add_argument("--source-size", type=int, default=512, help="side of the stand-in images in pixels")
    args = parser.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    with tempfile.TemporaryDirectory(prefix="bench_protocol-") as tmp:
        start = time.perf_counter()
        pool = image_pool(Path(tmp) / "pool", args.pool, args.source_size)
        sources = stand_ins(Path(tmp) / "datasets", pool, args.scale, args.max_categories)
        made = time.perf_counter() - start
        setup = paper_setup(args, Path(tmp) / "runs")
        jobs = table_jobs(PAPER, sources, setup.methods, setup.config, precision=setup.precision)
        sizes = {job.id: images_of(job) for job in jobs}
        jobs.sort(key=lambda job: sum(sizes[job.id]))
        where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
        total_images = sum(len(s.records()) for s in sources.values())
        print(f"paper profile, AnomalyCLIP, Tables 1-2: {setup.backbone} (random weights) at {setup.image_size} px, "
              f"{setup.epochs} epochs, {setup.precision}, {where}, {args.workers} workers; {len(sources)} synthetic "
              f"stand-ins at scale {args.scale:g}: {total_images} test images, {args.source_size} px; made in "
              f"{made:.1f} s (not timed)")  # fmt: skip
        store, total = RunStore(setup.run_store), 0.0
        for index, job in enumerate(jobs, start=1):
            start = time.perf_counter()
            report = execute([job], store, device=args.device, num_workers=args.workers, progress=False)
            seconds = time.perf_counter() - start
            total += seconds
            trained, evaluated = sizes[job.id]
            print(f"job {index}/{len(jobs)}: trained on {job.train.name} ({trained} images), evaluated on "
                  f"{len(job.targets)} datasets ({evaluated} images): {seconds:.1f} s", flush=True)  # fmt: skip
            if not report.ok:
                print(f"  failed: {report.failures[job.id]}")
                continue
            data = report.results[job.id].data
            print(f"  training (model, feature cache, {setup.epochs} epochs): {data['timings']['train_seconds']:.1f} s")
            for target, result in data["targets"].items():
                print(f"  {target:9s} {result['images']:5d} images {result['seconds']:7.1f} s "
                      f"{result['images_per_second']:7.1f} images/s")  # fmt: skip
        print(f"total: {len(jobs)} jobs in {total:.1f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
