"""Wall time of the main job, `anomalyclip reproduce` on the smoke profile, cold and then with a warm run store.

Run: python benchmarks/bench_reproduce.py [--notebooks 01,06] [--keep DIR]

Both runs go to a fresh temporary folder (reports and run store), as a user's first and second run would; the
shared mini benchmark is used when `../shared/datasets` is present (the smoke profile's `data_root: auto`), as it
is for a developer. Targets: the cold run under 15 minutes on 2 CPU cores with nothing else running, and the warm
rerun under a quarter of it. Printed: each run's wall time and CPU time (children included), the time per
notebook, the number of jobs and the load average around each run.

Recorded on the 2-core development machine (KVM guest, 2 vCPUs of an AVX-512 Xeon), quiet, 2026-11-28, commit a5e76f9,
with ../shared/datasets present (14 datasets evaluated by notebooks 01, 06 and 07; VisA's mini copy is skipped, as
its folder is incomplete):
    cold: 367.7 s wall, 606.4 s CPU; 49 jobs; load average 0.2 before, 1.1 after
        (the 49 jobs took 3 min 53 s; the notebooks 01 33.8 s, 02 5.8, 03 5.8, 04 6.4, 05 8.4, 06 56.1, 07 5.4, 08 7.0)
    warm: 135.1 s wall, 163.4 s CPU; 49 jobs; load average 1.1 before, 1.2 after
        (no job computed; the notebooks 01 35.1 s, 02 6.0, 03 7.0, 04 6.5, 05 8.6, 06 56.1, 07 5.4, 08 5.4)
    cold 6.1 min (target < 15 min on 2 idle cores); warm / cold 0.37 (target < 0.25)
The warm run is the notebooks alone: each kernel's start and imports (~3.5 s each), notebook 06's 12 maps per
dataset and failure cases re-scored and drawn for 14 datasets (50 s), and notebook 01 scoring every test image with
CLIP twice (23 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(out: Path, store: Path, notebooks: str | None) -> dict:
    """One `anomalyclip reproduce` run in a subprocess; its wall and CPU time, and what its manifest says."""
    command = [sys.executable, "-m", "anomalyclip.cli", "reproduce", "--out", str(out), "--run-store", str(store)]
    if notebooks:
        command += ["--notebooks", notebooks]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    manifest = json.loads((out / "smoke" / "manifest.json").read_text())
    return {"wall": wall, "cpu": cpu, "load": (load, os.getloadavg()[0]), "manifest": manifest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", help="a subset, e.g. 01,06 (default: all)")
    parser.add_argument("--keep", type=Path, help="keep the reports and run store in this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_reproduce-"))
    print(f"cpu cores: {os.cpu_count()}; folder: {root}")
    runs = {}
    for name in ("cold", "warm"):
        runs[name] = result = run(root / f"reports_{name}", root / "runs", args.notebooks)
        manifest = {**result["manifest"], **result["manifest"].get("extra", {})}
        jobs = manifest.get("jobs", [])
        print(f"{name}: {result['wall']:.1f} s wall, {result['cpu']:.1f} s CPU; {len(jobs)} jobs; "
              f"load average {result['load'][0]:.1f} before, {result['load'][1]:.1f} after")  # fmt: skip
        for notebook, seconds in result["manifest"].get("notebooks_wall_time_s", {}).items():
            print(f"    {notebook:<28} {seconds:7.1f} s")
    ratio = runs["warm"]["wall"] / runs["cold"]["wall"]
    print(f"cold {runs['cold']['wall'] / 60:.1f} min (target < 15 min on 2 idle cores); warm / cold {ratio:.2f} "
          "(target < 0.25)")  # fmt: skip


if __name__ == "__main__":
    main()
