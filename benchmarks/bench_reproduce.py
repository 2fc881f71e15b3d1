"""Wall time of the main job, `anomalyclip reproduce` on the smoke profile, cold and then with a warm run store.

Run: python benchmarks/bench_reproduce.py [--notebooks 01,06] [--keep DIR]

Both runs go to a fresh temporary folder (reports and run store), as a user's first and second run would; the
shared mini benchmark is used when `../shared/datasets` is present (the smoke profile's `data_root: auto`), as it
is for a developer. Targets: the cold run under 15 minutes on 2 CPU cores with nothing else running, and the warm
rerun under a quarter of it. Printed: each run's wall time and CPU time (children included), the time per
notebook, the number of jobs and the load average around each run.

Recorded on the 2-core development machine (KVM guest, 2 vCPUs of an AVX-512 Xeon), quiet, 2026-11-28, commit 5f4634a,
with ../shared/datasets present (14 datasets evaluated by notebooks 01, 06 and 07; VisA's mini copy is skipped, as
its folder is incomplete); notebooks two at a time once the jobs are done (05_training alone):
    cold: 358.9 s wall, 638.0 s CPU; 50 jobs; load average 0.9 before, 1.5 after
        (the notebooks 01 23.2 s, 02 6.3, 03 6.2, 04 9.0, 05 8.9, 06 58.0, 07 5.7, 08 5.6)
    warm: 74.8 s wall, 98.8 s CPU; 50 jobs; load average 1.5 before, 1.3 after
        (no job computed; the notebooks 01 9.0 s, 02 7.0, 03 6.4, 04 6.6, 05 10.0, 06 43.7, 07 5.7, 08 5.8)
    cold 6.0 min (target < 15 min on 2 idle cores); warm / cold 0.21 (target < 0.25)
Earlier pairs: 350.1 s / 73.6 s at 616eaf5 and 372.8 s / 78.5 s at e7b05fd (0.21 both). Before these changes (a5e76f9,
notebooks one after the other) the warm run took 135.1 s of a 367.7-s cold run (0.37): the warm run is the notebooks
alone, and then notebook 01 scored every test image with CLIP twice (23 s, now two CLIP jobs whose scores are
stored) and notebook 06 scored the images of its maps again (15 s, now kept in the run store by
`results.example_maps`). What is left is each kernel's start and imports (~3.5 s) and drawing and saving the figures,
two thirds of it notebook 06's 28 map strips of 36 images each (PNG and PDF, ~1.3 s per figure).
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
