"""`anomalyclip train | test | predict`: the engine from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.data.specs import DATASET_SPECS
from anomalyclip.errors import AnomalyCLIPError, ConfigError
from anomalyclip.files import output_dir
from anomalyclip.settings import add_flags, load_settings, merge, overrides_from_args

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the train, test and predict subcommands."""
    train = subparsers.add_parser("train", help="learn the prompts on an auxiliary dataset (official recipe)")
    _data_args(train, split_default="test")
    _backbone_args(train)
    _config_args(train)
    train.add_argument("--method", default="anomalyclip", choices=_learning_methods(), help="which method learns")
    train.add_argument("--out", type=Path, default=Path("runs/train"), help="folder for checkpoints and history")
    train.add_argument("--cache", choices=["memory", "disk", "none"],
                       help="feature cache: the backbone runs once instead of every epoch (default memory; vand has "
                            "none)")  # fmt: skip
    train.add_argument("--cache-dtype", choices=["fp16", "fp32"], help="precision of cached features (default fp32)")
    train.add_argument("--cache-dir", type=Path, help="folder of the disk cache (default OUT/feature_cache)")
    train.add_argument("--resume", action="store_true", help="continue after the last epoch_N.pt in --out")
    train.add_argument("--allow-changes", action="store_true",
                       help="with --resume: continue with changed settings (recorded in OUT/changes.json)")  # fmt: skip
    train.add_argument("--overwrite", action="store_true", help="replace a previous training run in --out")
    train.set_defaults(func=_train)

    test = subparsers.add_parser("test", help="zero-shot evaluation of any method with the paper's metrics")
    _data_args(test, split_default="test")
    _backbone_args(test)
    _method_args(test)
    test.add_argument("--out", type=Path, default=Path("runs/test"))
    test.add_argument("--batch-size", type=int, default=8)
    test.add_argument("--figures", type=int, default=0, help="heat-map figures to save per category")
    test.add_argument("--reference-split", default="train",
                      help="split whose normal images are the few-shot references (with --shots)")  # fmt: skip
    test.set_defaults(func=_test)

    predict = subparsers.add_parser("predict", help="anomaly maps and scores for your own images")
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders")
    _backbone_args(predict)
    _method_args(predict)
    predict.add_argument("--category", default="object", help="class name for the text prompts (CLIP, WinCLIP, ...)")
    predict.add_argument("--reference", type=Path, nargs="+", default=(),
                         help="normal images for few-shot methods (with --shots)")  # fmt: skip
    predict.add_argument("--out", type=Path, default=Path("runs/predict"))
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--threshold", type=float, help="image-score threshold for the anomalous flag")
    predict.add_argument("--pixel-threshold", type=float, help="map threshold (default: never flags by pixels)")
    predict.add_argument("--normal", type=Path, nargs="+", help="known-normal images: derive both thresholds")
    predict.add_argument("--quantile", type=float, default=1.0, help="quantile of normal scores (default: max)")
    predict.add_argument("--skip-bad", action="store_true", help="leave out unreadable images, listing them")
    predict.set_defaults(func=_predict)


def _learning_methods() -> list[str]:
    from anomalyclip.methods.catalog import METHODS

    return [name for name, info in METHODS.items() if info.learns]


def _method_args(parser: argparse.ArgumentParser) -> None:
    from anomalyclip.methods.catalog import METHODS, PRECISIONS

    parser.add_argument("--method", default="anomalyclip", choices=list(METHODS), help="which detector scores")
    parser.add_argument("--checkpoint", type=Path,
                        help="learned parameters of the method (project format, epoch_15.pth, APRIL-GAN)")  # fmt: skip
    parser.add_argument("--shots", type=int, default=0, help="normal reference images per category (few-shot)")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                        help="fp32 as the authors ran, or bf16 autocast (fast)")  # fmt: skip
    parser.add_argument("--image-size", type=int, help="input size (default: the method's or the checkpoint's)")


def _data_args(parser: argparse.ArgumentParser, split_default: str) -> None:
    parser.add_argument("--data-root", type=Path, required=True, help="dataset folder as downloaded")
    parser.add_argument("--dataset", default="auto", choices=["auto", *DATASET_SPECS])
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
    """--config FILE and one flag per configuration setting marked `cli=True` in anomalyclip/config.py."""
    parser.add_argument("--config", type=Path, help="YAML/JSON file with a (partial) AnomalyCLIPConfig")
    add_flags(parser.add_argument_group("configuration (override --config)"), AnomalyCLIPConfig)


def config_from_args(args: argparse.Namespace) -> AnomalyCLIPConfig:
    """The default recipe, then a --config file, then individual flags, then the backbone choice."""
    data = AnomalyCLIPConfig.from_file(args.config).to_dict() if getattr(args, "config", None) else {}
    config = AnomalyCLIPConfig.from_dict(merge(data, overrides_from_args(args, AnomalyCLIPConfig)))
    backbone, pretrained = backbone_choice(args)
    if backbone is not None or pretrained is not None:
        config = config.replace(backbone=backbone or config.backbone, pretrained=pretrained)
    return config


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The configuration `args.method` learns with: AnomalyCLIP's settings (`config_from_args`) for the prompt
    learners; for VAND its recipe, then a --config file of VANDConfig, then the flags naming a setting it shares
    (--epochs, --batch-size, --lr, --seed, --image-size, --features-list), then the backbone choice. A flag it has
    no setting for is an error."""
    from anomalyclip.methods.catalog import LEARNED_PROMPTS

    if args.method in LEARNED_PROMPTS:
        return config_from_args(args)
    from anomalyclip.methods.vand import VANDConfig

    data = load_settings(VANDConfig, args.config).to_dict() if getattr(args, "config", None) else {}
    flags = {name: value for section in overrides_from_args(args, AnomalyCLIPConfig).values()
             for name, value in (section.items() if isinstance(section, dict) else ())}  # fmt: skip
    known = {field.name for field in dataclasses.fields(VANDConfig)}
    foreign = sorted(f"--{name.replace('_', '-')}" for name in flags if name not in known)
    if foreign:
        raise ConfigError(f"{', '.join(foreign)}: not a setting of {args.method} (VANDConfig); it takes "
                          f"{sorted(known)} from --config FILE and the flags of the same names")  # fmt: skip
    config = VANDConfig.from_dict({**data, **flags})
    backbone, pretrained = backbone_choice(args)
    if backbone is not None or pretrained is not None:
        config = dataclasses.replace(config, backbone=backbone or config.backbone, pretrained=pretrained)
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
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AnomalyCLIPError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return device


def _records(args: argparse.Namespace):
    from anomalyclip.data.adapters.registry import load_records

    return load_records(args.data_root, args.dataset, args.split, args.categories, mask_threshold=args.mask_threshold,
                        skip_bad=args.skip_bad)  # fmt: skip


def _warn_if_tiny(backbone: str | None) -> None:
    """The random-weights banner for the built-in random CLIPs (the loader logs it for `--pretrained none`)."""
    from anomalyclip.backbone import TINY_NAMES
    from anomalyclip.reports import honesty_banner

    if backbone in TINY_NAMES:
        log.warning("%s", honesty_banner(backbone, None))


def _out_of_memory(batch_size: int) -> AnomalyCLIPError:
    return AnomalyCLIPError(f"out of GPU memory at batch size {batch_size}; try --batch-size {max(1, batch_size // 2)}")


def _train(args: argparse.Namespace) -> int:
    import torch

    from anomalyclip.methods import build_detector

    config = train_config_from_args(args)
    output_dir(args.out)
    records = _records(args)
    _warn_if_tiny(config.backbone)
    detector = build_detector(args.method, config=config, device=resolve_device(args.device))
    options = {"num_workers": args.num_workers, "mask_threshold": args.mask_threshold, "progress": not args.no_progress,
               "cache": args.cache, "cache_dtype": args.cache_dtype, "cache_dir": args.cache_dir, "resume": args.resume,
               "allow_changes": args.allow_changes, "overwrite": args.overwrite}  # fmt: skip
    try:
        result = detector.fit(records, args.out, **options)
    except torch.cuda.OutOfMemoryError as err:
        batch_size = config.train.batch_size if isinstance(config, AnomalyCLIPConfig) else config.batch_size
        raise _out_of_memory(batch_size) from err
    print(f"trained {result.epochs} epochs on {len(records)} images: cache {result.cache_seconds:.1f} s, "
          f"epochs {result.train_seconds:.1f} s; checkpoint {result.checkpoint}")  # fmt: skip
    return 0


def _detector(args: argparse.Namespace):
    """The chosen method on the chosen device, with its checkpoint, backbone and image size from the flags."""
    from anomalyclip.errors import ConfigError
    from anomalyclip.methods import METHODS, build_detector

    if METHODS[args.method].learns and args.checkpoint is None:
        raise ConfigError(f"method {args.method} learns its parameters: pass --checkpoint FILE (`anomalyclip train`)")
    backbone, pretrained = backbone_choice(args)
    _warn_if_tiny(backbone)
    return build_detector(args.method, checkpoint=args.checkpoint, backbone=backbone, pretrained=pretrained,
                          image_size=args.image_size, shots=args.shots, device=resolve_device(args.device))  # fmt: skip


def _test(args: argparse.Namespace) -> int:
    import torch

    from anomalyclip.engine.evaluation import evaluate, official_log_table
    from anomalyclip.engine.inference import check_batch_size

    check_batch_size(args.batch_size)
    output_dir(args.out)
    detector = _detector(args)
    records = _records(args)
    references = None
    if args.shots:
        from anomalyclip.data.adapters.registry import load_records

        train = load_records(args.data_root, args.dataset, args.reference_split, args.categories,
                             mask_threshold=args.mask_threshold)  # fmt: skip
        references = {}
        for record in train:
            references.setdefault(record.category, []).append(record)
    spec = DATASET_SPECS.get(args.dataset)
    pixel_level = spec.pixel_level if spec is not None else any(r.mask for r in records)
    try:
        result = evaluate(detector, records, references=references, batch_size=args.batch_size,
                          num_workers=args.num_workers, precision=args.precision, pixel_level=pixel_level,
                          mask_threshold=args.mask_threshold, out_dir=args.out, figures=args.figures,
                          progress=not args.no_progress)  # fmt: skip
    except torch.cuda.OutOfMemoryError as err:
        raise _out_of_memory(args.batch_size) from err
    print(official_log_table(result.metrics))
    print(f"{args.method}: {result.images} images in {result.seconds:.1f} s ({result.images_per_second:.1f} img/s); "
          f"results in {args.out}")  # fmt: skip
    return 0


def _predict(args: argparse.Namespace) -> int:
    from anomalyclip.engine.inference import check_batch_size
    from anomalyclip.engine.prediction import Thresholds, predict, thresholds_from_normals

    given = args.threshold is not None or args.pixel_threshold is not None
    if args.normal and given:
        raise ConfigError("--normal derives both thresholds; give either --normal or --threshold/--pixel-threshold")
    thresholds = Thresholds(args.threshold, args.pixel_threshold) if given else None
    check_batch_size(args.batch_size)
    output_dir(args.out)
    detector = _detector(args)
    options = {"category": args.category, "batch_size": args.batch_size, "precision": args.precision}
    if args.normal:
        thresholds = thresholds_from_normals(detector, args.normal, args.quantile, **options)
        log.info("thresholds from normal images: image %.4f, pixel %.4f", thresholds.image, thresholds.pixel)
    predictions = predict(detector, args.images, args.out, references=args.reference, thresholds=thresholds,
                          skip_bad=args.skip_bad, progress=not args.no_progress, **options)  # fmt: skip
    for p in predictions:
        flag = "" if p.anomalous is None else ("  ANOMALOUS" if p.anomalous else "  normal")
        print(f"{p.score:.4f}  {p.image}{flag}")
    print(json.dumps({"images": len(predictions), "out": str(args.out)}))
    return 0
