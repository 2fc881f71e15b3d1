"""Prove equality with the official implementation: run a conformance bundle through this package's own code.

A bundle (`config.json`, CLIP weights, an official prompt checkpoint, `inputs/`, `expected.npz`) holds what
zqhang/AnomalyCLIP computed on a tiny random CLIP. Everything (sizes, layers, DPAM blocks, widths) is read from the
bundle, so bundles with other seeds, sizes and settings are checked the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalyclip import head
from anomalyclip.checkpoint import load_checkpoint
from anomalyclip.config import (
    AnomalyCLIPConfig,
    HeadConfig,
    LossConfig,
    PromptConfig,
    TrainConfig,
    VisionConfig,
)
from anomalyclip.data.io import OFFICIAL_MASK_THRESHOLD, read_image, read_mask
from anomalyclip.data.transforms import ImageTransform, MaskTransform
from anomalyclip.errors import AnomalyCLIPError
from anomalyclip.model import AnomalyCLIP

FORWARD_TOL = 1e-4
TRANSFORM_TOL = 1e-5
FP16_RELATIVE = 2.0**-10
FP32_RELATIVE = 1e-4
"""The deep text tokens pass through `.half()` in the official code, so their gradients agree to fp16 precision."""


@dataclass
class Check:
    """One compared array: the largest absolute difference and the tolerance it must stay within."""

    name: str
    max_abs: float
    tol: float
    ok: bool
    note: str = ""


@dataclass
class ConformanceReport:
    """All checks of one bundle, and the arrays this checker compares that the bundle does not hold.

    Every array of `expected.npz` is compared; one this checker does not know is a failed check naming it.
    """

    bundle: str
    checks: list[Check] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Arrays the checker compares for this bundle's settings that `expected.npz` lacks (reported, not compared)."""

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        checks = [asdict(c) for c in self.checks]
        return {"passed": self.passed, "bundle": self.bundle, "checks": checks, "missing": self.missing}


class BundleError(AnomalyCLIPError):
    """A conformance bundle is missing a file or a setting."""


class Comparison:
    """Compares our arrays with a bundle's `expected.npz` into a report, and remembers which arrays it compared, so
    that an array the bundle holds but no check reads fails (nothing in a bundle is silently ignored)."""

    def __init__(self, expected: dict[str, np.ndarray], report: ConformanceReport, *, missing_fails: bool = False):
        self.expected = expected
        self.report = report
        self.missing_fails = missing_fails
        """An array the checker compares but the bundle lacks: a failed check, or (default) listed in `missing`."""
        self.compared: set[str] = set()

    def __call__(self, name: str, actual: Any, tol: float, *, key: str | None = None,
                 where: np.ndarray | None = None) -> None:  # fmt: skip
        """Compare with `expected[key or name]`, over the elements selected by `where` (all by default)."""
        key = key or name
        self.compared.add(key)
        if key not in self.expected:
            if self.missing_fails:
                self.report.checks.append(Check(f"{name} (missing in bundle)", math.inf, tol, False))
            elif key not in self.report.missing:
                self.report.missing.append(key)
            return
        want = np.asarray(self.expected[key], dtype=np.float64)
        got = np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
        if got.shape != want.shape:
            self.report.checks.append(Check(name, math.inf, tol, False))
            return
        diff = np.abs(got - want)[where if where is not None else ...]
        self.record(name, float(diff.max()) if diff.size else 0.0, tol)

    def record(self, name: str, worst: float, tol: float) -> None:
        """Append one check of largest difference `worst`."""
        self.report.checks.append(Check(name, worst, tol, bool(worst <= tol)))

    def same(self, name: str, ours: Any, stated: Any) -> None:
        """A setting or text the bundle states outside `expected.npz` must equal ours exactly."""
        self.record(name, 0.0 if ours == stated else math.inf, 0.0)

    def flag(self, name: str, ok: bool, mismatches: float = 1.0) -> None:
        """A check of a setting rather than an array: 0 when it holds, else the number of mismatches."""
        self.report.checks.append(Check(name, 0.0 if ok else float(mismatches), 0.0, ok))

    def flag_unchecked(self, not_applicable: Iterable[str] = ()) -> None:
        """Every expected array without a check (and not declared not applicable) is a failed check naming it."""
        for key in sorted(set(self.expected) - self.compared - set(not_applicable)):
            note = "unknown array: expected.npz holds it but this checker does not compare it"
            self.report.checks.append(Check(key, math.nan, math.nan, False, note))


def bundle_config(bundle: Path) -> tuple[AnomalyCLIPConfig, dict[str, Any]]:
    """The project configuration equivalent to the official run recorded in `config.json`."""
    raw = _read_json(bundle / "config.json")
    try:
        replaced = sorted(raw["dpam_replaced_layers_1_indexed"])
        depth = raw["vision"]["layers"]
        if replaced and replaced != list(range(depth - len(replaced) + 1, depth + 1)):
            raise BundleError(f"{bundle}: DPAM blocks {replaced} are not the trailing blocks of {depth}")
        config = AnomalyCLIPConfig(
            backbone=str((bundle / raw["clip_weights"]).resolve()),
            pretrained=None,
            prompt=PromptConfig(n_ctx=raw["n_ctx"], depth=raw["depth"], t_n_ctx=raw["t_n_ctx"]),
            vision=VisionConfig(
                image_size=raw["image_size"],
                features_list=tuple(raw["features_list"]),
                dpam_blocks=len(replaced),
            ),
            head=HeadConfig(temperature=raw["temperature"], sigma=raw["sigma"]),
            loss=LossConfig(lambda_local=raw["lambda_local"]),
            train=TrainConfig(lr=raw["adam"]["lr"], betas=tuple(raw["adam"]["betas"]), seed=raw["seed"]),
        )
    except KeyError as err:
        raise BundleError(f"{bundle / 'config.json'} lacks the setting {err}") from err
    return config, raw


def run_conformance(bundle: str | Path, device: str = "cpu") -> ConformanceReport:
    """Run every check of `bundle`; never raises for a numeric mismatch (that is a failed check)."""
    bundle = Path(bundle)
    config, raw = bundle_config(bundle)
    expected = _load_expected(bundle / "expected.npz")
    report = ConformanceReport(bundle=str(bundle))
    check = Comparison(expected, report)

    images, masks, labels = _read_inputs(bundle, raw, config.vision.image_size)
    check("preprocessed", images, TRANSFORM_TOL)
    check("masks", masks, TRANSFORM_TOL)
    check("labels", labels, 0.0)

    model = AnomalyCLIP.from_config(config, device=device)
    load_checkpoint(bundle / raw["prompt_learner_checkpoint"], model.prompt_learner)
    images, masks, labels = images.to(device), masks.to(device), labels.to(device)
    size = config.vision.image_size
    check("tokenized_prompts", model.prompt_learner.tokenized_prompts, 0.0)
    grid = model.vision.grid_size(size)
    check("positional_embedding_resized", model.vision.positional_embedding(grid), FORWARD_TOL)

    with torch.no_grad():
        text = model.text_features()
        features = model.encode_image(images)
        output = model.head(features, text, size)
    check("text_features", text[None], FORWARD_TOL)
    check("image_features", torch.nn.functional.normalize(features.global_embedding, dim=-1), FORWARD_TOL)
    temperature = config.head.temperature
    for layer, tokens in zip(config.vision.features_list, features.patch_tokens, strict=True):
        check(f"patch_tokens_l{layer}", tokens, FORWARD_TOL)
        check(f"similarity_patch_l{layer}", head.patch_probabilities(tokens, text, temperature), FORWARD_TOL)
    check(f"similarity_map_l{config.vision.features_list[-1]}", output.similarity_maps[-1], FORWARD_TOL)
    check("anomaly_map_raw", output.anomaly_map_raw, FORWARD_TOL)
    check("anomaly_map", output.anomaly_map, FORWARD_TOL)
    check("image_scores", output.image_scores, FORWARD_TOL)

    _check_training_step(model, features, labels, masks, size, check, expected)
    _check_metrics(output, masks, labels, check)
    check.flag_unchecked()
    return report


def _check_training_step(
    model: AnomalyCLIP,
    features: Any,
    labels: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    check: Callable[[str, Any, float], None],
    expected: dict[str, np.ndarray],
) -> None:
    """One glocal-loss step: losses, gradients of every prompt parameter, and the parameters after one Adam step."""
    learner = model.prompt_learner
    model.train()
    loss, _ = model.loss(features, labels, masks, size)
    check("loss_total", loss.total, FORWARD_TOL)
    check("loss_global", loss.global_loss, FORWARD_TOL)
    check("loss_local", loss.local_loss, FORWARD_TOL)
    check("loss_focal_first", loss.focal_per_layer[0], FORWARD_TOL)
    optimizer = torch.optim.Adam(learner.parameters(), lr=model.config.train.lr, betas=model.config.train.betas)
    optimizer.zero_grad()
    loss.total.backward()
    named = {"ctx_pos": learner.ctx_pos, "ctx_neg": learner.ctx_neg}
    named.update({f"compound_{i}": p for i, p in enumerate(learner.compound_prompts_text)})
    grad_tols = {}
    for name, param in named.items():
        want = expected.get(f"grad_{name}")
        scale = float(np.max(np.abs(want))) if want is not None and want.size else 0.0
        relative = FP16_RELATIVE if name.startswith("compound") else FP32_RELATIVE
        grad_tols[name] = max(FORWARD_TOL * 1e-2, relative * scale)
        check(f"grad_{name}", param.grad, grad_tols[name])
    optimizer.step()
    lr = model.config.train.lr
    for name, param in named.items():
        want = expected.get(f"grad_{name}")
        if want is None:
            continue
        # Adam's first step moves each element by lr * g / (|g| + eps): where the official gradient is within fp16
        # precision of zero its sign (or its underflow to 0) is not determined, so such elements may differ by lr.
        band = np.abs(want) <= grad_tols[name]
        check(f"{name}_after_step", param, FORWARD_TOL, where=~band)
        if band.any():
            check(f"{name}_after_step_fp16_band", param, lr + FORWARD_TOL, where=band, key=f"{name}_after_step")
    model.eval()


def _check_metrics(output: Any, masks: torch.Tensor, labels: torch.Tensor, check: Callable[..., None]) -> None:
    from anomalyclip import metrics

    maps = output.anomaly_map.cpu().numpy()
    gt = masks.cpu().numpy().astype(np.uint8)
    y = labels.cpu().numpy()
    scores = output.image_scores.cpu().numpy()
    check("metric_pixel_auroc", metrics.pixel_auroc(gt, maps), 1e-6)
    check("metric_pixel_aupro", metrics.aupro(gt, maps, variant="official"), 1e-6)
    check("metric_image_auroc", metrics.image_auroc(y, scores), 1e-6)
    check("metric_image_ap", metrics.image_ap(y, scores), 1e-6)


def _read_inputs(bundle: Path, raw: dict[str, Any], size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image_t, mask_t = ImageTransform(size), MaskTransform(size)
    images, masks, labels = [], [], []
    for item in raw.get("inputs", []):
        images.append(image_t(read_image(bundle / "inputs" / item["image"])))
        mask_name = item.get("mask") or ""
        mask = read_mask(bundle / "inputs" / mask_name, OFFICIAL_MASK_THRESHOLD) if mask_name else None
        masks.append(mask_t(mask)[0])
        labels.append(1 if mask_name else 0)
    if not images:
        raise BundleError(f"{bundle / 'config.json'} lists no inputs")
    return torch.stack(images), torch.stack(masks), torch.tensor(labels)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path} does not exist; a conformance bundle needs config.json, expected.npz and inputs/")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from err


def _load_expected(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BundleError(f"{path} does not exist; a conformance bundle needs the official outputs in expected.npz")
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except Exception as err:  # zipfile, pickle and format errors arrive as many types; all mean "not an npz"
        message = f"{path} is not a readable .npz archive ({err}); copy the bundle's expected.npz again"
        raise BundleError(message) from err


BUNDLE_REFERENCES = {
    "zqhang/AnomalyCLIP": "anomalyclip",
    "WinClipModel": "winclip",
    "VAND-APRIL-GAN": "vand",
}
"""What a bundle's `official_code` / `reference_code` names -> the method it checks."""


def bundle_method(bundle: str | Path) -> str:
    """The method a bundle holds reference outputs of, from the reference code its config.json names."""
    raw = _read_json(Path(bundle) / "config.json")
    reference = f"{raw.get('official_code', '')} {raw.get('reference_code', '')}"
    found = [method for marker, method in BUNDLE_REFERENCES.items() if marker in reference]
    if len(found) != 1:
        raise BundleError(
            f"{bundle}/config.json names reference code {reference.strip()!r}; expected one of "
            f"{sorted(BUNDLE_REFERENCES)} in 'official_code' or 'reference_code'"
        )
    return found[0]


def check_bundle(bundle: str | Path, device: str = "cpu") -> ConformanceReport:
    """Run the checks of any bundle: the method and every setting come from the bundle itself."""
    method = bundle_method(bundle)
    if method == "winclip":
        from anomalyclip.conformance_winclip import check_winclip_bundle

        return check_winclip_bundle(bundle, device)
    if method == "vand":
        from anomalyclip.conformance_vand import check_vand_bundle

        return check_vand_bundle(bundle, device)
    return run_conformance(bundle, device)
