"""Images per second of the data layer at 518 px (decode, resize, normalise, masks) with 0..N worker processes.

Run: python benchmarks/bench_data.py [ROOT --dataset NAME] [--n 96]. Without ROOT it reads the MVTec AD grid
(1024x1024 PNG) and hazelnut_toy (512x512 JPEG) folders of ../shared/datasets (or $ANOMALYCLIP_SHARED/datasets).

Output on the 2-core development machine (KVM "Intel Xeon Processor" with AVX-512, torch 2.14 CPU; load average
~4 from other jobs sharing the cores, so the images/s are lower bounds, the CPU ms per image steadier):
    dataset: 54 images (mvtec 21 + generic 33), cycled to 96, 518 px, batch 8
    workers=0     32.1 images/s   CPU  32.2 ms per image (all processes)
    workers=1     58.8 images/s   CPU  18.5 ms per image (all processes)
    workers=2     69.2 images/s   CPU  19.4 ms per image (all processes)
Per image (one process): decode 11.4 ms (1024x1024 grey PNG) / 5.1 ms (512x512 JPEG), bicubic resize 3.3 / 3.0 ms,
normalisation 1.1 ms, mask 4.4 / 2.3 ms when there is one; the DataLoader adds ~4 ms (shared-memory batches,
worker start). Decode and resize (PIL, exact) are two thirds of it. ViT-L/14@336 at 518 px runs at ~9 images/s
on an RTX 3090 (the paper's 8.92 FPS), so two worker processes feed it several times over.

`--synthetic` times writing the default synthetic dataset instead (the smoke runs and tests make it on the fly; it
should take a few seconds at most). Output on the same machine, load average ~8 from other jobs:
    synthetic dataset (defaults): 138 files in 1.43 s
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import resource
import tempfile
import time
from pathlib import Path

from anomalyclip.data import AnomalyDataset, load_records, make_loader
from anomalyclip.data.synth import make_synthetic_dataset

SHARED = Path(os.environ.get("ANOMALYCLIP_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "datasets"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished child processes (the loader's workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def measure(records, image_size: int, workers: int, batch_size: int) -> tuple[float, float]:
    """Images per second after the first batch, and CPU milliseconds per image of all processes together.

    The CPU time counts every image, the first batch included; the wall-clock rate is what a model sees, and it
    falls when other jobs share the cores, while the CPU time per image stays about the same.
    """
    cpu = cpu_seconds()
    loader = make_loader(AnomalyDataset(records, image_size), batch_size, num_workers=workers)
    iterator = iter(loader)
    count = len(next(iterator)["label"])  # start the workers before timing
    start = time.perf_counter()
    timed = sum(len(batch["label"]) for batch in iterator)
    rate = timed / (time.perf_counter() - start)
    del iterator, loader  # shuts the workers down, so that their CPU time is counted
    gc.collect()
    return rate, (cpu_seconds() - cpu) / (count + timed) * 1000


def synthetic_seconds() -> tuple[int, float]:
    """Files written and seconds taken by `make_synthetic_dataset` with its defaults, into a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        root = make_synthetic_dataset(Path(folder) / "synthetic")
        seconds = time.perf_counter() - start
        return sum(p.is_file() for p in root.rglob("*")), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?")
    parser.add_argument("--synthetic", action="store_true", help="time the default synthetic dataset instead")
    parser.add_argument("--dataset", default="auto")
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({0, 1, os.cpu_count() or 1}))
    args = parser.parse_args()
    if args.synthetic:
        files, seconds = synthetic_seconds()
        print(f"synthetic dataset (defaults): {files} files in {seconds:.2f} s")
        return
    if args.root:
        records = load_records(args.root, args.dataset, split=None)
        label = f"{len(records)} images of {args.root}"
    else:
        grid = load_records(SHARED / "mvtec_ad", "mvtec", split=None)
        hazelnut = load_records(SHARED / "hazelnut_toy", "generic", split=None)
        records = grid + hazelnut
        label = f"{len(records)} images (mvtec {len(grid)} + generic {len(hazelnut)})"
    records = list(itertools.islice(itertools.cycle(records), args.n + args.batch_size))
    print(f"dataset: {label}, cycled to {args.n}, {args.image_size} px, batch {args.batch_size}")
    for workers in args.workers:
        rate, cpu_ms = measure(records, args.image_size, workers, args.batch_size)
        print(f"workers={workers:<3} {rate:6.1f} images/s   CPU {cpu_ms:5.1f} ms per image (all processes)")


if __name__ == "__main__":
    main()
