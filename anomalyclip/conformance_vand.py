"""Prove VAND (APRIL-GAN) equal to the authors' code: run a VAND conformance bundle through `anomalyclip.methods.vand`.

A bundle (`config.json`, a tiny CLIP, the authors' linear-layer checkpoint, `prompts.json`, `inputs/`, `expected.npz`)
holds what ByChelsea/VAND-APRIL-GAN computed. Every setting (sizes, blocks, k, class names, scale, weights, inputs,
optimiser) is read from `config.json`, so bundles made with other values are checked unchanged. Every array of
`expected.npz` is compared or listed in `NOT_APPLICABLE` with a reason; a key that is neither fails the report.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anomalyclip.backbone import read_state_dict
from anomalyclip.conformance import BundleError, Comparison, ConformanceReport, _load_expected, _read_json
from anomalyclip.data.io import OFFICIAL_MASK_THRESHOLD, read_image, read_mask
from anomalyclip.methods.vand import (
    VAND,
    VANDConfig,
    VANDFeatures,
    fewshot_distances,
    image_logits,
    load_checkpoint,
    vand_loss,
)
from anomalyclip.prompts import CLIP_AC_ABNORMAL_STATES, CLIP_AC_NORMAL_STATES, CLIP_AC_TEMPLATES, clip_ac_sentences

MAP_TOL = 1e-4
"""Tokens, embeddings, logits (values up to ~40), maps, scores and losses: an independent fp32 re-implementation
stays within 1.5e-5; the nearest wrong choice (e.g. `align_corners=False`) moves the summed map by 1.1."""
TRANSFORM_TOL = 1e-5
GRAD_TOL = 1e-5
"""Gradients (values up to ~1) and the parameters after one Adam step (which moves each by about lr)."""
NOT_APPLICABLE: dict[str, str] = {}
"""expected.npz keys deliberately not compared, with the reason (none: every array of the bundle is checked)."""


def bundle_vand_config(bundle: Path) -> tuple[VANDConfig, dict[str, Any]]:
    """The VAND configuration of the authors' run recorded in `config.json`, and the raw settings."""
    raw = _read_json(bundle / "config.json")
    try:
        optimiser = raw["optimiser"]
        config = VANDConfig(
            backbone=str(_weights_file(bundle, raw["weights"]["clip"])),
            pretrained=raw["pretrained_flag"],
            image_size=raw["image_size"],
            features_list=tuple(raw["features_list"]),
            few_shot_features=tuple(raw["few_shot_features"]),
            k_shot=raw["k_shot"],
            scale=float(raw["scale"]),
            lr=float(optimiser["lr"]),
            betas=tuple(optimiser["betas"]),
            seed=raw["seed"],
        )
    except KeyError as err:
        raise BundleError(f"{bundle / 'config.json'} lacks the setting {err}") from err
    return config, raw


def check_vand_bundle(bundle: str | Path, device: str = "cpu") -> ConformanceReport:
    """Run every check of a VAND bundle; never raises for a numeric mismatch (that is a failed check)."""
    bundle = Path(bundle)
    config, raw = bundle_vand_config(bundle)
    expected = _load_expected(bundle / "expected.npz")
    report = ConformanceReport(bundle=str(bundle))
    check = Comparison(expected, report, missing_fails=True)
    flag = check.flag

    with _exact_fp32():
        model = VAND.from_config(config, device=device)
        load_checkpoint(_weights_file(bundle, raw["weights"]["linear_layer"]), model)
        _check_settings(bundle, raw, model, flag)
        inputs = _Inputs.read(bundle, raw, model)
        inputs.check(bundle, report)
        classes = list(raw["class_names"])
        texts = _check_text(model, classes, check)
        check("positional_embedding_resized", model.clip.visual.positional_embedding, MAP_TOL)
        images = inputs.images.to(model.device)
        text = torch.stack([texts[c] for c in inputs.classes])
        with torch.no_grad():
            features = model.encode(images)
            _check_forward(model, features, text, int(raw["diag_images"]), check)
            _check_scores(model, features, images, inputs, check)
        _check_training_step(model, features, text, inputs.masks.to(model.device), check, expected)

    check.flag_unchecked(NOT_APPLICABLE)
    return report


@contextlib.contextmanager
def _exact_fp32() -> Iterator[None]:
    """No TF32 on a GPU while checking (cuDNN's default would round the patch embedding to 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _weights_file(bundle: Path, description: str) -> Path:
    """The file a `weights` entry names first (e.g. "clip_tiny_open_clip.pt (open_clip layout, ...)")."""
    path = bundle / str(description).split()[0]
    if not path.is_file():
        raise BundleError(f"{path} does not exist; {bundle / 'config.json'} names it as a weights file")
    return path


def _check_settings(bundle: Path, raw: dict[str, Any], model: VAND, flag: Any) -> None:
    """The architecture, activation, patch grid, prompt sentences and optimiser agree with the bundle's."""
    visual, state = model.clip.visual, read_state_dict(Path(model.config.backbone))
    native = math.isqrt(state["visual.positional_embedding"].shape[0] - 1) * visual.patch_size[0]
    built = {
        "embed_dim": visual.output_dim,
        "vision_cfg": {"image_size": native, "layers": len(visual.transformer.resblocks),
                       "width": visual.conv1.out_channels, "patch_size": visual.patch_size[0]},
        "text_cfg": {"context_length": model.text.context_length, "vocab_size": model.clip.vocab_size,
                     "width": model.text.width, "heads": model.clip.transformer.resblocks[0].attn.num_heads,
                     "layers": len(model.text.blocks)},
    }  # fmt: skip
    wanted = raw["model_config"]
    differing = [
        f"{section}.{key}"
        for section, values in wanted.items()
        for key, value in (values.items() if isinstance(values, dict) else [("", values)])
        if (built[section][key] if key else built[section]) != value
    ]
    flag("model_config", not differing, len(differing))
    activation = "quickgelu" if model.quick_gelu else "gelu"
    flag("activation", activation == str(raw["activation"]).lower().replace("_", ""))
    flag("patch_grid", visual.grid_size == (raw["patch_grid"], raw["patch_grid"]))

    prompts = _read_json(bundle / "prompts.json")
    constants = [list(CLIP_AC_NORMAL_STATES), list(CLIP_AC_ABNORMAL_STATES), list(CLIP_AC_TEMPLATES)]
    flag("prompt_ensemble", [prompts["prompt_normal"], prompts["prompt_abnormal"], prompts["prompt_templates"]]
         == constants)  # fmt: skip
    flag("prompt_class_names", prompts["class_names"] == raw["class_names"])
    for name in raw["class_names"]:
        ours = dict(zip(("normal", "abnormal"), clip_ac_sentences(name), strict=True))
        theirs = prompts["sentences"][name]
        wrong = sum(a != b for state in ours for a, b in zip(ours[state], theirs[state], strict=False))
        wrong += sum(abs(len(ours[state]) - len(theirs[state])) for state in ours)
        flag(f"prompt_sentences_{name}", wrong == 0, wrong)

    optimiser, group = raw["optimiser"], model.make_optimizer().param_groups[0]
    ours = {"type": "Adam", "lr": group["lr"], "betas": list(group["betas"]), "eps": group["eps"],
            "weight_decay": group["weight_decay"]}  # fmt: skip
    differing = [k for k in optimiser if ours.get(k) != optimiser[k]]
    flag("optimiser", not differing, len(differing))


@dataclass
class _Inputs:
    """The bundle's raw files through VAND's own transforms, in batch order, with their classes and labels."""

    images: torch.Tensor
    masks: torch.Tensor
    """(B, S, S) 0/1."""
    labels: torch.Tensor
    classes: list[str]
    references: dict[str, torch.Tensor]
    """Class -> (k, 3, S, S) few-shot references (empty zero-shot)."""

    @classmethod
    def read(cls, bundle: Path, raw: dict[str, Any], model: VAND) -> _Inputs:
        folder = bundle / "inputs"
        image_t, mask_t = model.image_transform(), model.mask_transform()
        images, masks, labels, classes = [], [], [], []
        for item in raw["inputs"]:
            images.append(image_t(read_image(folder / item["image"])))
            mask = read_mask(folder / item["mask"], OFFICIAL_MASK_THRESHOLD) if item.get("mask") else None
            masks.append(mask_t(mask)[0])
            labels.append(int(item["label"]))
            classes.append(item["class"])
        if not images:
            raise BundleError(f"{bundle / 'config.json'} lists no inputs")
        names, k = list(raw["class_names"]), int(raw["k_shot"])
        files = list(raw.get("few_shot_refs", []))
        if len(files) != k * len(names):
            raise BundleError(f"{bundle}: {len(files)} few_shot_refs for {len(names)} classes x k={k}")
        refs = [image_t(read_image(folder / f)) for f in files]
        references = {name: torch.stack(refs[i * k : (i + 1) * k]) for i, name in enumerate(names) if k}
        return cls(torch.stack(images), torch.stack(masks), torch.tensor(labels), classes, references)

    def check(self, bundle: Path, report: ConformanceReport) -> None:
        """Our transforms on the raw files against the authors' preprocessed inputs (`inputs/inputs.npz`)."""
        path = bundle / "inputs" / "inputs.npz"
        if not path.is_file():
            raise BundleError(f"{path} does not exist; a VAND bundle keeps the preprocessed inputs there")
        with np.load(path) as data:
            given = {k: data[k].astype(np.float64) for k in data.files}
        ours = {"images": self.images, "masks": self.masks[:, None], "labels": self.labels}
        if self.references:
            ours["ref_images"] = torch.cat(list(self.references.values()))
        compare = Comparison(given, report, missing_fails=True)
        for key, tensor in ours.items():
            compare(f"inputs_{key}", tensor, TRANSFORM_TOL, key=key)


def _check_text(model: VAND, classes: list[str], check: Any) -> dict[str, torch.Tensor]:
    """Token ids, per-sentence embeddings and the ensembled text features of each class."""
    texts = {}
    for name in classes:
        for state, sentences in zip(("normal", "abnormal"), clip_ac_sentences(name), strict=True):
            tokens = model.text.tokenize(sentences)
            check(f"text_tokens_{name}_{state}", tokens, 0.0)
            with torch.no_grad():
                check(f"text_embeds_{name}_{state}", model.text(model.text.embed(tokens), tokens), MAP_TOL)
        texts[name] = model.text_features(name)
    check("text_features", torch.stack([texts[c].T for c in classes]), MAP_TOL)
    return texts


def _check_forward(model: VAND, features: VANDFeatures, text: torch.Tensor, diag: int, check: Any) -> None:
    """Pooled features and image logits, then per block: raw tokens, mapped tokens, logits and maps."""
    scale = model.config.scale
    check("image_features_raw", features.image_embedding, MAP_TOL)
    check("image_features", F.normalize(features.image_embedding, dim=-1), MAP_TOL)
    logits = image_logits(features.image_embedding, text, scale)
    check("image_logits", logits, MAP_TOL)
    check("pr_sp", logits.softmax(dim=-1)[:, 1], MAP_TOL)
    blocks = model.config.features_list
    mapped = model.linear([features.patch_tokens[b] for b in blocks])
    maps = model.segmentation_maps(features, text)
    for block, tokens, block_logits, block_map in zip(
        blocks, mapped, model.segmentation_logits(features, text), maps, strict=True
    ):
        with_cls = torch.cat([features.class_tokens[block][:, None], features.patch_tokens[block]], dim=1)
        check(f"patch_tokens_l{block}", with_cls[:diag], MAP_TOL)
        check(f"linear_tokens_l{block}", tokens[:diag], MAP_TOL)
        check(f"logits_grid_l{block}", block_logits, MAP_TOL)
        check(f"anomaly_map_l{block}", block_map[:diag, 1], MAP_TOL)


def _check_scores(model: VAND, features: VANDFeatures, images: torch.Tensor, inputs: _Inputs, check: Any) -> None:
    """Zero-shot map; per class the contract's few-shot path (`prepare` with the references, `score`,
    `finalize_scores` over the class's images) and the per-block distances behind it."""
    text = torch.stack([model.text_features(c) for c in inputs.classes])
    check("anomaly_map", model.zero_shot_map(features, text), MAP_TOL)
    if not model.shots:
        return
    few_map, combined = torch.zeros(2, len(images), *images.shape[-2:])
    scores = torch.zeros(len(images), dtype=torch.float64)
    distances = {
        b: torch.zeros(len(images), math.prod(model.clip.visual.grid_size)) for b in model.config.few_shot_features
    }
    for name in dict.fromkeys(inputs.classes):
        rows = torch.tensor([i for i, c in enumerate(inputs.classes) if c == name])
        prepared = model.prepare(name, inputs.references[name].to(model.device))
        output = model.score(images[rows.to(images.device)], prepared)
        combined[rows] = output.anomaly_maps.cpu()
        scores[rows] = model.finalize_scores(output.image_scores, output.anomaly_maps.flatten(1).amax(dim=1)).cpu()
        own = VANDFeatures(features.image_embedding[rows], {b: t[rows] for b, t in features.patch_tokens.items()}, {})
        few_map[rows] = model.fewshot_map(own, prepared.memory).cpu()
        for block in distances:
            distances[block][rows] = fewshot_distances(own.patch_tokens[block], prepared.memory[block]).cpu()
    for block, values in distances.items():
        check(f"fewshot_dist_l{block}", values, MAP_TOL)
    check("fewshot_map", few_map, MAP_TOL)
    check("fewshot_combined_map", combined, MAP_TOL)
    check("pr_sp_few_shot", scores, MAP_TOL)


def _check_training_step(
    model: VAND,
    features: VANDFeatures,
    text: torch.Tensor,
    masks: torch.Tensor,
    check: Any,
    expected: dict[str, np.ndarray],
) -> None:
    """train.py's loss on the batch, its gradients, and the linear layers after one Adam step."""
    loss = vand_loss(model.segmentation_maps(features, text), masks)
    for block, focal, dice in zip(model.config.features_list, loss.focal, loss.dice, strict=True):
        check(f"train_loss_focal_l{block}", focal, MAP_TOL)
        check(f"train_loss_dice_l{block}", dice, MAP_TOL)
    check("train_loss", loss.total, MAP_TOL)
    optimizer = model.make_optimizer()
    optimizer.zero_grad()
    loss.total.backward()
    named = {f"fc{i}_{kind}": getattr(fc, kind) for i, fc in enumerate(model.linear.fc) for kind in ("weight", "bias")}
    for name, param in named.items():
        check(f"train_grad_{name}", param.grad, GRAD_TOL)
    optimizer.step()
    lr = model.config.lr
    for name, param in named.items():
        key = f"train_{name}_after"
        grad = expected.get(f"train_grad_{name}")
        # Adam's first step moves each element by about lr * sign(g): where the authors' gradient is within the
        # gradient tolerance of zero its sign is not determined, so those elements may differ by up to 2 lr.
        band = np.abs(grad) <= GRAD_TOL if grad is not None else np.zeros(param.shape, dtype=bool)
        check(key, param, GRAD_TOL, where=~band)
        if band.any():
            check(f"{key}_near_zero_gradient", param, 2 * lr + GRAD_TOL, key=key, where=band)
