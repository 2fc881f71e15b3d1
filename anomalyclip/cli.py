"""The `anomalyclip` command line: a thin face on the package API (one subcommand group per module)."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from anomalyclip.errors import AnomalyCLIPError


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags; the modules that do the work (torch, open_clip, pandas) load when one runs."""
    from anomalyclip import conformance_cli, reproduce
    from anomalyclip.data import cli as data_cli
    from anomalyclip.engine import cli as engine_cli

    parser = argparse.ArgumentParser(prog="anomalyclip", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True)
    conformance_cli.register(subparsers)
    data_cli.register(subparsers)
    engine_cli.register(subparsers)
    reproduce.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a project error ends with a one-line message and exit status 2 (-v adds the traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except AnomalyCLIPError as err:
        if args.verbose:
            traceback.print_exc()
        print(f"anomalyclip {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anomalyclip {args.command}: interrupted", file=sys.stderr)
        return 130


def one_line(err: AnomalyCLIPError) -> str:
    """The error's own message, also when a DataLoader worker raised it (torch then wraps it in the worker's
    traceback, whose last line is `module.ErrorType: message`)."""
    lines = str(err).strip().splitlines()
    if "Original Traceback (most recent call last):" not in lines:
        return " ".join(line.strip() for line in lines)
    name = type(err).__name__
    return lines[-1].removeprefix(f"{type(err).__module__}.{name}: ").removeprefix(f"{name}: ")


if __name__ == "__main__":
    sys.exit(main())
