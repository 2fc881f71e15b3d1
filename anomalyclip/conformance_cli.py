"""`anomalyclip conformance BUNDLE_DIR [--json]`: the conformance check from the command line.

Kept apart from `anomalyclip.conformance` so that building the command line does not load torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `conformance` subcommand."""
    parser = subparsers.add_parser("conformance", help="compare this package with the official outputs of a bundle")
    parser.add_argument("bundle", type=Path, help="folder with config.json, expected.npz, inputs/ and weights")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from anomalyclip.conformance import check_bundle

    report = check_bundle(args.bundle, device=args.device)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for c in report.checks:
            note = f"  ({c.note})" if c.note else ""
            print(f"{c.name:32s} max_abs={c.max_abs:.3e} tol={c.tol:.1e} {'ok' if c.ok else 'FAIL'}{note}")
        for key in report.missing:
            print(f"{key:32s} not in expected.npz: not compared")
        passed, failed = sum(c.ok for c in report.checks), sum(not c.ok for c in report.checks)
        print(f"{passed} passed, {failed} failed, {len(report.missing)} not in the bundle")
    return 0 if report.passed else 1
