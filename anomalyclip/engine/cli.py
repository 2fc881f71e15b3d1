"""`anomalyclip train | test | predict`: the engine from the command line."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
import yaml

from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.data import DATASETS, load_records
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.errors import AnomalyCLIPError, ConfigError
from anomalyclip.files import output_dir

log = logging.getLogger(__name__)

_OVERRIDES = {
    # flag dest: (section, field)
    "image_size": ("vision", "image_size"),
    "features_list": ("vision", "features_list"),
    "dpam_blocks": ("vision", "dpam_blocks"),
    "dpam_mode": ("vision", "dpam_mode"),
    "n_ctx": ("prompt", "n_ctx"),
    "depth": ("prompt", "depth"),
    "t_n_ctx": ("prompt", "t_n_ctx"),
    "state_word": ("prompt", "state_word"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "seed": ("train", "seed"),
    "lambda_local": ("loss", "lambda_local"),
    "sigma": ("head", "sigma"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the train, test and predict subcommands."""
    train = subparsers.add_parser("train", help="learn the prompts on an auxiliary dataset (official recipe)")
    _data_args(train, split_default="test")
    _backbone_args(train)
    _config_args(train)
    train.add_argument("--out", type=Path, default=Path("runs/train"), help="folder for checkpoints and history")
    train.add_argument("--cache", choices=["memory", "disk", "none"], default="memory",
                       help="feature cache: the backbone runs once instead of every epoch")  # fmt: skip
    train.add_argument("--cache-dtype", choices=["fp16", "fp32"], default="fp32")
    train.add_argument("--cache-dir", type=Path, help="folder of the disk cache (default OUT/feature_cache)")
    train.add_argument("--resume", action="store_true", help="continue after the last epoch_N.pt in --out")
    train.add_argument("--allow-changes", action="store_true",
                       help="with --resume: continue with changed settings (recorded in OUT/changes.json)")  # fmt: skip
    train.add_argument("--overwrite", action="store_true", help="replace a previous training run in --out")
    train.set_defaults(func=_train)

    test = subparsers.add_parser("test", help="zero-shot evaluation with the paper's metrics, per category")
    _data_args(test, split_default="test")
    _backbone_args(test)
    test.add_argument("--checkpoint", type=Path, required=True, help="prompt checkpoint (project or epoch_15.pth)")
    test.add_argument("--out", type=Path, default=Path("runs/test"))
    test.add_argument("--batch-size", type=int, default=8)
    test.add_argument("--figures", type=int, default=0, help="heat-map figures to save per category")
    test.add_argument("--image-size", type=int, help="input size (default: the checkpoint's, official 518)")
    test.set_defaults(func=_test)

    predict = subparsers.add_parser("predict", help="anomaly maps and scores for your own images")
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders")
    _backbone_args(predict)
    predict.add_argument("--checkpoint", type=Path, required=True)
    predict.add_argument("--out", type=Path, default=Path("runs/predict"))
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--threshold", type=float, help="image-score threshold for the anomalous flag")
    predict.add_argument("--pixel-threshold", type=float, help="map threshold (default: never flags by pixels)")
    predict.add_argument("--normal", type=Path, nargs="+", help="known-normal images: derive both thresholds")
    predict.add_argument("--quantile", type=float, default=1.0, help="quantile of normal scores (default: max)")
    predict.add_argument("--image-size", type=int, help="input size (default: the checkpoint's, official 518)")
    predict.add_argument("--skip-bad", action="store_true", help="leave out unreadable images, listing them")
    predict.set_defaults(func=_predict)


def _data_args(parser: argparse.ArgumentParser, split_default: str) -> None:
    parser.add_argument("--data-root", type=Path, required=True, help="dataset folder as downloaded")
    parser.add_argument("--dataset", default="auto", choices=["auto", *DATASETS])
    parser.add_argument("--split", default=split_default)
    parser.add_argument("--categories", nargs="+")
    parser.add_argument("--mask-threshold", type=int, default=DEFAULT_MASK_THRESHOLD)
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--skip-bad", action="store_true", help="leave out records with problems (missing masks …)")


def _backbone_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", help="open_clip model name, 'tiny', or a weights file (default ViT-L-14-336)")
    parser.add_argument("--pretrained", help="open_clip tag (default: openai where the model has it), a weights "
                        "file for --backbone, or 'none' for random weights")  # fmt: skip
    parser.add_argument("--weights", type=Path, help="a local CLIP weights file (OpenAI JIT/state dict, open_clip)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true")


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML/JSON file with a (partial) AnomalyCLIPConfig")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--features-list", type=int, nargs="+")
    parser.add_argument("--dpam-blocks", type=int, help="trailing blocks with the DPAM path (0 = off)")
    parser.add_argument("--dpam-mode", choices=["vv", "qq", "kk"])
    parser.add_argument("--n-ctx", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--t-n-ctx", type=int)
    parser.add_argument("--state-word")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--lambda-local", type=float)
    parser.add_argument("--sigma", type=float)


def config_from_args(args: argparse.Namespace) -> AnomalyCLIPConfig:
    """The default recipe, then a --config file, then individual flags, then the backbone choice."""
    data = {}
    if getattr(args, "config", None):
        data = _read_config_file(args.config)
    for dest, (section, key) in _OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is not None:
            data.setdefault(section, {})[key] = tuple(value) if isinstance(value, list) else value
    config = AnomalyCLIPConfig.from_dict(data)
    backbone, pretrained = backbone_choice(args)
    if backbone is not None or pretrained is not None:
        config = config.replace(backbone=backbone or config.backbone, pretrained=pretrained)
    return config


def backbone_choice(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(backbone, pretrained) from --weights, --backbone and --pretrained; None where not given."""
    if args.weights is not None:
        if args.backbone not in (None, "tiny") and args.pretrained is None:
            return args.backbone, str(args.weights)
        return str(args.weights), None
    if args.backbone == "tiny":
        return "tiny", None
    return args.backbone, args.pretrained


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AnomalyCLIPError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return device


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise AnomalyCLIPError(f"configuration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise AnomalyCLIPError(f"{path} is not valid YAML/JSON: {err}") from err
    if not isinstance(data, dict):
        raise AnomalyCLIPError(f"{path} must hold a mapping of configuration sections, got {type(data).__name__}")
    try:
        AnomalyCLIPConfig.from_dict(data)
    except (TypeError, ConfigError) as err:
        raise ConfigError(f"{path}: {err}") from err
    return data


def _records(args: argparse.Namespace):
    return load_records(args.data_root, args.dataset, args.split, args.categories, mask_threshold=args.mask_threshold,
                        skip_bad=args.skip_bad)  # fmt: skip


def _warn_if_tiny(config: AnomalyCLIPConfig) -> None:
    """The random-weights banner for `tiny` (the backbone loader logs it for an explicit `--pretrained none`)."""
    from anomalyclip.backbone import TINY
    from anomalyclip.reports import honesty_banner

    if config.backbone == TINY:
        log.warning("%s", honesty_banner(config.backbone, config.pretrained))


def _out_of_memory(batch_size: int) -> AnomalyCLIPError:
    return AnomalyCLIPError(f"out of GPU memory at batch size {batch_size}; try --batch-size {max(1, batch_size // 2)}")


def _train(args: argparse.Namespace) -> int:
    from anomalyclip.engine.training import check_recipe, train
    from anomalyclip.model import AnomalyCLIP

    config = config_from_args(args)
    check_recipe(config.train)
    output_dir(args.out)
    records = _records(args)
    _warn_if_tiny(config)
    model = AnomalyCLIP.from_config(config, device=resolve_device(args.device))
    try:
        result = train(model, records, args.out, cache=args.cache, cache_dtype=args.cache_dtype,
                       cache_dir=args.cache_dir, resume=args.resume, allow_changes=args.allow_changes,
                       overwrite=args.overwrite, num_workers=args.num_workers, mask_threshold=args.mask_threshold,
                       progress=not args.no_progress)  # fmt: skip
    except torch.cuda.OutOfMemoryError as err:
        raise _out_of_memory(config.train.batch_size) from err
    print(f"trained {result.epochs} epochs on {len(records)} images: cache {result.cache_seconds:.1f} s, "
          f"epochs {result.train_seconds:.1f} s; checkpoint {result.checkpoint}")  # fmt: skip
    return 0


def _load_for_inference(args: argparse.Namespace):
    """The checkpoint's model on the chosen device, with the backbone and image size the flags give."""
    from anomalyclip.engine.loading import load_model

    backbone, pretrained = backbone_choice(args)
    model = load_model(args.checkpoint, backbone=backbone, pretrained=pretrained, image_size=args.image_size,
                       device=resolve_device(args.device))  # fmt: skip
    _warn_if_tiny(model.config)
    return model


def _test(args: argparse.Namespace) -> int:
    from anomalyclip.engine.evaluation import evaluate, official_log_table
    from anomalyclip.engine.features import check_batch_size

    check_batch_size(args.batch_size)
    output_dir(args.out)
    model = _load_for_inference(args)
    records = _records(args)
    pixel_level = DATASETS[args.dataset].pixel_level if args.dataset in DATASETS else any(r.mask for r in records)
    try:
        result = evaluate(model, records, batch_size=args.batch_size, num_workers=args.num_workers,
                          pixel_level=pixel_level, mask_threshold=args.mask_threshold, out_dir=args.out,
                          figures=args.figures, progress=not args.no_progress)  # fmt: skip
    except torch.cuda.OutOfMemoryError as err:
        raise _out_of_memory(args.batch_size) from err
    print(official_log_table(result.metrics))
    print(f"{result.images} images in {result.seconds:.1f} s ({result.images_per_second:.1f} img/s); "
          f"results in {args.out}")  # fmt: skip
    return 0


def _predict(args: argparse.Namespace) -> int:
    from anomalyclip.engine.features import check_batch_size
    from anomalyclip.engine.prediction import Thresholds, predict, thresholds_from_normals

    given = args.threshold is not None or args.pixel_threshold is not None
    if args.normal and given:
        raise ConfigError("--normal derives both thresholds; give either --normal or --threshold/--pixel-threshold")
    thresholds = Thresholds(args.threshold, args.pixel_threshold) if given else None
    check_batch_size(args.batch_size)
    output_dir(args.out)
    model = _load_for_inference(args)
    if args.normal:
        thresholds = thresholds_from_normals(model, args.normal, args.quantile, args.batch_size)
        log.info("thresholds from normal images: image %.4f, pixel %.4f", thresholds.image, thresholds.pixel)
    predictions = predict(model, args.images, args.out, thresholds=thresholds, batch_size=args.batch_size,
                          skip_bad=args.skip_bad, progress=not args.no_progress)  # fmt: skip
    for p in predictions:
        flag = "" if p.anomalous is None else ("  ANOMALOUS" if p.anomalous else "  normal")
        print(f"{p.score:.4f}  {p.image}{flag}")
    print(json.dumps({"images": len(predictions), "out": str(args.out)}))
    return 0
