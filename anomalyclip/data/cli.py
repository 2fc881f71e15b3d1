"""`anomalyclip data ...`: check a dataset folder, make the synthetic set, download, and write meta.json."""

from __future__ import annotations

import argparse

from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD, OFFICIAL_MASK_THRESHOLD
from anomalyclip.errors import DataError


def _threshold(args: argparse.Namespace) -> int:
    return OFFICIAL_MASK_THRESHOLD if args.official_masks else args.mask_threshold


def _split(args: argparse.Namespace) -> str | None:
    return None if args.split == "all" else args.split


def run_check(args: argparse.Namespace) -> int:
    from anomalyclip.data.check import check_dataset, format_report

    report = check_dataset(args.root, args.dataset, _split(args), args.category, mask_threshold=_threshold(args))
    print(format_report(report, limit=None if args.show_all else 20))
    return 0 if report.ok else 1


def run_synth(args: argparse.Namespace) -> int:
    from anomalyclip.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(
        args.root,
        categories=args.categories,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defect=args.n_test_defect,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"wrote a synthetic MVTec-like dataset to {root}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from anomalyclip.data.download import DATASET_SOURCES, download_dataset

    if args.list or args.name is None:
        for name, source in DATASET_SOURCES.items():
            how = "download" if source.url else "manual (see the homepage)"
            print(f"{name:<10} {source.title}: {how}; licence {source.licence}")
        return 0 if args.list else 2
    if args.root is None:
        raise DataError("data download: --root DIR is required; expected the folder to download into")
    path = download_dataset(args.name, args.root, base_url=args.base_url, progress=not args.no_progress)
    print(f"{args.name} is in {path}")
    return 0


def run_meta_json(args: argparse.Namespace) -> int:
    from anomalyclip.data.adapters.registry import load_records
    from anomalyclip.data.meta_json import write_meta_json

    records = load_records(args.root, args.dataset, None, mask_threshold=_threshold(args), skip_bad=args.skip_bad)
    path = write_meta_json(records, args.root, args.out)
    print(f"wrote {len(records)} records to {path}")
    return 0


def run_prepare_sdd(args: argparse.Namespace) -> int:
    from anomalyclip.data.adapters.sdd import prepare_sdd

    print(f"wrote SDD thirds to {prepare_sdd(args.source, args.target, _threshold(args))}")
    return 0


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset root folder")
    parser.add_argument("--dataset", default="auto", help="dataset name (see data/README.md) or 'auto'")
    _mask_options(parser)


def _mask_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask-threshold",
        type=int,
        default=DEFAULT_MASK_THRESHOLD,
        help="mask grey value (0-255) from which a pixel is anomalous (default %(default)s)",
    )
    parser.add_argument("--official-masks", action="store_true", help="the official rule: any value > 0 is anomalous")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command group to the top-level parser."""
    data = subparsers.add_parser("data", help="dataset checks, synthetic data, downloads", description=__doc__)
    commands = data.add_subparsers(dest="data_command", required=True)

    check = commands.add_parser("check", help="count a dataset and list every problem by file name (exit 1 if any)")
    _dataset_options(check)
    check.add_argument("--split", choices=("train", "test", "all"), default="all")
    check.add_argument("--category", action="append", help="check only this category (repeatable)")
    check.add_argument("--show-all", action="store_true", help="print every problem, not the first 20 per kind")
    check.set_defaults(func=run_check)

    synth = commands.add_parser("synth", help="write the deterministic synthetic MVTec-like dataset")
    synth.add_argument("root", help="folder to write into")
    synth.add_argument("--categories", nargs="+", default=None)
    synth.add_argument("--n-train", type=int, default=8)
    synth.add_argument("--n-test-good", type=int, default=6)
    synth.add_argument("--n-test-defect", type=int, default=10)
    synth.add_argument("--image-size", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=run_synth)

    download = commands.add_parser("download", help="download and unpack a dataset, or say how to get it")
    download.add_argument("name", nargs="?", help="dataset name")
    download.add_argument("--root", help="folder to download into")
    download.add_argument("--base-url", default=None, help="mirror to download from instead of the official address")
    download.add_argument("--no-progress", action="store_true")
    download.add_argument("--list", action="store_true", help="list the datasets and their sources")
    download.set_defaults(func=run_download)

    meta = commands.add_parser("meta-json", help="write the official meta.json for a dataset folder")
    _dataset_options(meta)
    meta.add_argument("--skip-bad", action="store_true", help="go on past problems and list what was skipped")
    meta.add_argument("--out", default=None, help="file to write (default ROOT/meta.json)")
    meta.set_defaults(func=run_meta_json)

    sdd = commands.add_parser("prepare-sdd", help="write KolektorSDD thirds as an MVTec-like SDD folder")
    sdd.add_argument("source", help="raw KolektorSDD folder (kosNN/PartK.jpg)")
    sdd.add_argument("target", help="folder to write")
    _mask_options(sdd)
    sdd.set_defaults(func=run_prepare_sdd)
