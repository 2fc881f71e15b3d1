"""Prove equality with anomalib 2.7.0's `WinClipModel`: run a WinCLIP conformance bundle through `WinCLIP`.

A bundle (`config.json`, an open_clip model config and the weights of a tiny random CLIP, `prompts.json`, `inputs/`,
`expected.npz`) holds what anomalib computed. Every setting (class name, scales, temperature, k values, image size,
model, weights, inputs, references) is read from `config.json`, so bundles with other values are checked the same way.
Every array of `expected.npz` is compared; one this module has no check for is reported as a failed check.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from anomalyclip.conformance import (
    TRANSFORM_TOL,
    BundleError,
    Comparison,
    ConformanceReport,
    _load_expected,
    _read_json,
)
from anomalyclip.data.io import OFFICIAL_MASK_THRESHOLD, read_image, read_mask
from anomalyclip.data.transforms import OPENAI_MEAN, OPENAI_STD
from anomalyclip.methods.winclip import (
    ImageEmbeddings,
    WinCLIP,
    WinCLIPConfig,
    WinCLIPState,
    prompt_ensemble,
    upsample,
)

EMBEDDING_TOL = 1e-4
"""Embeddings (values up to about 5) agree to about 1.3e-5 between open_clip 2.24 and 3.3.0 in fp32."""
SCORE_TOL = 1e-5
"""Scores and maps agree to about 6e-7; every known deviation from the reference moves them by >= 1e-3."""


def bundle_config(bundle: Path, raw: dict[str, Any]) -> WinCLIPConfig:
    """The detector configuration of the anomalib run recorded in `config.json` (zero-shot; k is set per check)."""
    try:
        size = raw["image_size"]
        height, width = (size, size) if isinstance(size, int) else size
        if height != width:
            raise BundleError(f"{bundle / 'config.json'}: image_size {size} is not square; WinCLIP takes S x S")
        return WinCLIPConfig(
            backbone=str(bundle / f"{raw['open_clip_model_name']}.json"),
            pretrained=str(bundle / raw["clip_weights"]),
            image_size=int(height),
            scales=tuple(raw["scales"]),
            temperature=float(raw["temperature"]),
        )
    except KeyError as err:
        raise BundleError(f"{bundle / 'config.json'} lacks the setting {err}") from err


def check_winclip_bundle(bundle: str | Path, device: str | torch.device = "cpu") -> ConformanceReport:
    """Run every check of a WinCLIP bundle; never raises for a numeric mismatch (that is a failed check)."""
    bundle = Path(bundle)
    raw = _read_json(bundle / "config.json")
    config = bundle_config(bundle, raw)
    expected = _load_expected(bundle / "expected.npz")
    report = ConformanceReport(bundle=str(bundle))
    check = Comparison(expected, report)
    detector = WinCLIP.from_config(config, device)
    try:
        class_name, k_shots = str(raw["class_name"]), [int(k) for k in raw["k_shots"]]
        check.same(
            "transform_mean_std", [*OPENAI_MEAN, *OPENAI_STD], [*raw["transforms"]["mean"], *raw["transforms"]["std"]]
        )
        check.same("model_config", raw["model_config"], _read_json(Path(config.backbone)))
        check.same("grid_size", list(detector.grid), list(raw["grid_size"]))
        n_windows = {f"s{scale}": w.shape[1] for scale, w in zip(config.scales, detector.windows, strict=True)}
        check.same("n_windows", n_windows, raw["n_windows"])
        normal, anomalous = prompt_ensemble(class_name)
        check.same("n_prompts", {"normal": len(normal), "anomalous": len(anomalous)}, raw["n_prompts"])
    except KeyError as err:
        raise BundleError(f"{bundle / 'config.json'} lacks the setting {err}") from err
    images, masks, labels, references = _read_inputs(bundle, raw, detector)
    if max(k_shots, default=0) > len(references):
        raise BundleError(f"{bundle / 'config.json'}: k_shots {k_shots} but only {len(references)} references")
    check("images", images, TRANSFORM_TOL)
    check("masks", masks, 0.0)
    check("labels", labels, 0.0)
    check("reference_images", references, TRANSFORM_TOL)
    for scale, windows in zip(config.scales, detector.windows, strict=True):
        check(f"window_masks_s{scale}", windows, 0.0)

    state = detector.prepare(class_name)
    _check_text(detector, state, _read_json(bundle / "prompts.json"), check)
    embedded = detector.encode(images.to(device))
    check("feature_map", embedded.tokens, EMBEDDING_TOL)
    check("image_embeddings", embedded.image, EMBEDDING_TOL)
    check("patch_embeddings", embedded.patches, EMBEDDING_TOL)
    for scale, windows in zip(config.scales, embedded.windows, strict=True):
        check(f"window_embeddings_s{scale}", windows, EMBEDDING_TOL)
    _check_maps("zs", detector, embedded, state, check)

    for k in k_shots:  # the text and the test images are encoded once; each k encodes its references
        for prefix, unnormalized in ((f"fs_k{k}", False), (f"fs_engine_k{k}", True)):
            if any(key.startswith(f"{prefix}_") for key in expected):
                few_shot = WinCLIP(
                    detector.clip, dataclasses.replace(config, k_shot=k, unnormalized_references=unnormalized)
                )
                memory = few_shot.memory(references[:k].to(device))
                _check_maps(prefix, few_shot, embedded, dataclasses.replace(state, memory=memory), check)
    check.flag_unchecked()
    return report


def _check_text(detector: WinCLIP, state: WinCLIPState, prompts: dict[str, Any], check: Comparison) -> None:
    """The prompt sentences, their tokens and raw embeddings, and the per-class means the scores use."""
    normal, anomalous = prompt_ensemble(state.class_name)
    check.same(
        "prompts",
        [state.class_name, normal, anomalous],
        [prompts.get(k) for k in ("class_name", "normal", "anomalous")],
    )
    for kind, sentences in (("normal", normal), ("anomalous", anomalous)):
        check(f"text_tokens_{kind}", detector.tokenize(sentences), 0.0)
        check(f"text_embeddings_{kind}_all", detector.encode_sentences(sentences), EMBEDDING_TOL)
    check("text_embeddings", state.text, EMBEDDING_TOL)
    check("text_embeddings_normalized", F.normalize(state.text, dim=-1), EMBEDDING_TOL)


def _check_maps(
    prefix: str, detector: WinCLIP, embedded: ImageEmbeddings, state: WinCLIPState, check: Comparison
) -> None:
    """Every stage of one zero-shot (`zs`) or k-shot (`fs_k{k}`, `fs_engine_k{k}`) run, under the bundle's names."""
    maps = detector.grid_maps(embedded, state)
    scales = detector.config.scales
    if maps.few_shot is None:
        branch = maps.zero_shot
        check(f"{prefix}_image_scores", maps.image_scores, SCORE_TOL)
    else:
        branch = maps.few_shot
        memory = state.memory
        check(f"{prefix}_memory_patch", memory.patches, EMBEDDING_TOL)
        for scale, windows in zip(scales, memory.windows, strict=True):
            check(f"{prefix}_memory_window_s{scale}", windows, EMBEDDING_TOL)
        check(f"{prefix}_patch_scores", branch.patch_scores, SCORE_TOL)
        check(f"{prefix}_combined_map", maps.grid_map, SCORE_TOL)
    for scale, scores, scale_map in zip(scales, branch.window_scores, branch.scale_maps, strict=True):
        check(f"{prefix}_window_scores_s{scale}", scores, SCORE_TOL)
        check(f"{prefix}_map_s{scale}", scale_map, SCORE_TOL)
    check(f"{prefix}_map", branch.map, SCORE_TOL)
    check(f"{prefix}_pred_score", maps.pred_scores, SCORE_TOL)
    check(f"{prefix}_anomaly_map", upsample(maps.grid_map, detector.image_size), SCORE_TOL)


def _read_inputs(
    bundle: Path, raw: dict[str, Any], detector: WinCLIP
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Test images, masks, labels and references through the detector's own transforms, in the bundle's order."""
    image_t, mask_t = detector.image_transform(), detector.mask_transform()
    folder = bundle / "inputs"
    try:
        items, refs = raw["inputs"], raw["reference"]
        images = [image_t(read_image(folder / item["image"])) for item in items]
        masks = [
            mask_t(read_mask(folder / item["mask"], OFFICIAL_MASK_THRESHOLD) if item.get("mask") else None)[0]
            for item in items
        ]
        labels = [int(item["label"]) for item in items]
        references = [image_t(read_image(folder / ref["image"])) for ref in refs]
    except KeyError as err:
        raise BundleError(f"{bundle / 'config.json'}: an input or reference lacks {err}") from err
    if not images:
        raise BundleError(f"{bundle / 'config.json'} lists no inputs")
    stacked_refs = torch.stack(references) if references else torch.empty(0, *images[0].shape)
    return torch.stack(images), torch.stack(masks), torch.tensor(labels), stacked_refs
