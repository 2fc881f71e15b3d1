"""APRIL-GAN, winner of the VAND 2023 zero-shot track (Chen et al.; ByChelsea/VAND-APRIL-GAN): CLIP patch tokens
mapped into the text space by trained linear layers, plus a few-shot memory of normal patch tokens.

Zero-shot: the raw residual stream after blocks 6/12/18/24 (no `ln_post`, no `proj`, CLS dropped) goes through one
`nn.Linear` per block; the L2-normalised result, times 100, meets the CLIP-AC text ensemble of the category; the
2-channel logits are upsampled (bilinear, `align_corners=True`), then softmaxed, and the abnormal channel is summed
over the blocks. The image score is the softmax of the pooled CLIP image feature against the same text. Few-shot adds,
per block, 1 - the best cosine of each raw patch token with those of k normal references, upsampled and summed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, resize_pos_embed
from PIL import Image
from torch import nn
from tqdm import tqdm

from anomalyclip.backbone import freeze, load_backbone, openai_style, set_activation, uses_quick_gelu
from anomalyclip.checkpoint import atomic_save, load_safely, method_of
from anomalyclip.data import AnomalyDataset, Record, load_pair, make_loader
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.engine.run_folder import claim_run_folder
from anomalyclip.errors import CheckpointError, ConfigError, DataError, InputSizeError
from anomalyclip.files import output_dir
from anomalyclip.losses import dice_loss, focal_loss
from anomalyclip.methods.base import Detector, DetectorOutput
from anomalyclip.prompts import clip_ac_sentences, ensemble_text_features
from anomalyclip.settings import from_mapping
from anomalyclip.text import TextEncoder

log = logging.getLogger(__name__)

Activation = Literal["official", "gelu", "quick_gelu"]
ACTIVATIONS: tuple[str, ...] = ("official", "gelu", "quick_gelu")

TRAIN_RECIPES: dict[str, dict[str, Any]] = {
    "mvtec": {"epochs": 3, "batch_size": 8, "mosaic_rate": 0.2},
    "visa": {"epochs": 15, "batch_size": 8, "mosaic_rate": 0.0},
}
"""The authors' train.sh: on MVTec AD (their checkpoint for testing VisA) and on VisA (for testing MVTec AD)."""

CHECKPOINT_KEY = "trainable_linearlayer"
"""The authors' checkpoint format: `{"trainable_linearlayer": state_dict}` with keys `fc.{i}.weight|bias`."""


@dataclass
class VANDConfig:
    """Everything that defines a VAND run; the defaults are the authors' test_zero_shot.sh and MVTec train.sh."""

    backbone: str = "ViT-L-14-336"
    pretrained: str | None = "openai"
    image_size: int = 518
    features_list: tuple[int, ...] = (6, 12, 18, 24)
    """1-indexed blocks whose tokens the linear layers map (one `fc.i` each, in this order)."""
    few_shot_features: tuple[int, ...] = (6, 12, 18, 24)
    """1-indexed blocks whose raw tokens form the few-shot memory."""
    k_shot: int = 0
    activation: Activation = "official"
    """'official': as their factory, OpenAI weights keep QuickGELU only at their native size (336 px for
    ViT-L-14-336) and otherwise run with nn.GELU (CLIP rebuilt from the JSON config, which has no quick_gelu);
    weights of other hub tags keep their config's activation. 'gelu' / 'quick_gelu' force one."""
    scale: float = 100.0
    """The constant the normalised features are multiplied by before the text product (not `logit_scale`)."""
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 111
    mosaic_rate: float = 0.2
    """Probability that a training item becomes a 2x2 mosaic of its category (their MVTec recipe; 0 for VisA)."""

    def __post_init__(self) -> None:
        self.features_list = _layers("features_list", self.features_list)
        self.few_shot_features = _layers("few_shot_features", self.few_shot_features)
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if not isinstance(self.backbone, str) or not self.backbone:
            raise _invalid("backbone", self.backbone, "an open_clip model name, 'tiny' or a weights file")
        _require("image_size", self.image_size, isinstance(self.image_size, int) and self.image_size > 0, "an int > 0")
        _require("k_shot", self.k_shot, isinstance(self.k_shot, int) and self.k_shot >= 0, "an int >= 0")
        _require("activation", self.activation, self.activation in ACTIVATIONS, f"one of {ACTIVATIONS}")
        _require("scale", self.scale, _is_number(self.scale) and self.scale > 0, "a number > 0")
        _require("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs >= 1, "an int >= 1")
        _require(
            "batch_size", self.batch_size, isinstance(self.batch_size, int) and self.batch_size >= 1, "an int >= 1"
        )
        _require("lr", self.lr, _is_number(self.lr) and self.lr > 0, "a number > 0")
        betas_ok = len(self.betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in self.betas)
        _require("betas", self.betas, betas_ok, "two numbers in [0, 1)")
        _require("seed", self.seed, isinstance(self.seed, int), "an int")
        rate_ok = _is_number(self.mosaic_rate) and 0 <= self.mosaic_rate <= 1
        _require("mosaic_rate", self.mosaic_rate, rate_ok, "a number in [0, 1]")

    @classmethod
    def recipe(cls, training_set: str, **overrides: Any) -> VANDConfig:
        """The authors' training recipe for `training_set` ('mvtec' or 'visa'), with `overrides` on top."""
        if training_set not in TRAIN_RECIPES:
            raise _invalid("recipe", training_set, f"one of {sorted(TRAIN_RECIPES)}")
        return cls(**{**TRAIN_RECIPES[training_set], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (tuples as lists), so a checkpoint holding it loads with `weights_only=True`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VANDConfig:
        """Build from a (possibly partial) dict; unknown keys are an error, not ignored."""
        return from_mapping(cls, data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _invalid(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"VANDConfig.{name} = {value!r} is not allowed; expected {allowed}")


def _require(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise _invalid(name, value, allowed)


def _layers(name: str, value: Any) -> tuple[int, ...]:
    layers = tuple(value) if isinstance(value, (list, tuple)) else ()
    ok = bool(layers) and all(isinstance(v, int) and v >= 1 for v in layers) and len(set(layers)) == len(layers)
    _require(name, value, ok, "a non-empty list of distinct 1-indexed block numbers, e.g. [6, 12, 18, 24]")
    return layers


@dataclass
class VANDFeatures:
    """What one pass of the frozen image tower gives VAND."""

    image_embedding: torch.Tensor
    """(B, E): `ln_post(CLS after the last block) @ proj`, not normalised."""
    patch_tokens: dict[int, torch.Tensor]
    """Block (1-indexed) -> (B, G*G, W): the raw residual stream after that block, CLS dropped."""
    class_tokens: dict[int, torch.Tensor]
    """Block -> (B, W): the CLS token of the same stream (unused by VAND; kept for inspection)."""

    def float(self) -> VANDFeatures:
        return VANDFeatures(
            self.image_embedding.float(),
            {k: v.float() for k, v in self.patch_tokens.items()},
            {k: v.float() for k, v in self.class_tokens.items()},
        )


@dataclass
class VANDPrepared:
    """Per-category state: the text features and, few-shot, the memory of normal patch tokens."""

    category: str
    text: torch.Tensor
    """(2, E) L2-normalised [normal, abnormal] CLIP-AC ensemble of the category name."""
    memory: dict[int, torch.Tensor] | None = None
    """Block -> (k*G*G, W) raw patch tokens of the k references; None zero-shot."""


@dataclass
class VANDLoss:
    """train.py's loss of one batch: the sum over blocks of focal + dice; `total` is back-propagated."""

    total: torch.Tensor
    focal: list[torch.Tensor]
    dice: list[torch.Tensor]


@dataclass
class VANDFitResult:
    """What `VAND.fit` produced: the last checkpoint, the per-step loss history and the seconds its epochs took."""

    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs: int = 0
    train_seconds: float = 0.0
    cache_seconds: float = 0.0
    """Always 0: VAND keeps no feature cache (the fields mirror `engine.training.TrainResult`)."""


class LinearLayers(nn.Module):
    """One `nn.Linear(W, E)` per block of `features_list`; parameter names as the authors' (`fc.{i}.*`)."""

    def __init__(self, width: int, embed_dim: int, count: int):
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(width, embed_dim) for _ in range(count))

    def forward(self, patch_tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """(B, G*G, W) tokens of each block -> (B, G*G, E), not normalised."""
        return [fc(tokens) for fc, tokens in zip(self.fc, patch_tokens, strict=True)]


def patch_logits(linear_tokens: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, G*G, E) mapped tokens and (2, E) or (B, 2, E) text -> (B, G*G, 2): `(scale * normalised tokens) @ text`."""
    return (scale * F.normalize(linear_tokens, dim=-1)) @ text.transpose(-1, -2)


def upsample_grid(values: torch.Tensor, size: int) -> torch.Tensor:
    """(B, G*G, C) per-patch values -> (B, C, S, S), bilinear with `align_corners=True` as the authors upsample."""
    b, n, c = values.shape
    grid = math.isqrt(n)
    square = values.transpose(1, 2).reshape(b, c, grid, grid)
    return F.interpolate(square, size=(size, size), mode="bilinear", align_corners=True)


def probability_maps(logits: Sequence[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Per block (B, 2, S, S) [normal, abnormal] probabilities: upsample the logits first, then softmax."""
    return [upsample_grid(block_logits, size).softmax(dim=1) for block_logits in logits]


def image_logits(image_embedding: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, E) pooled features and (2, E) or (B, 2, E) text -> (B, 2): `(scale * normalised feature) @ text`."""
    return ((scale * F.normalize(image_embedding, dim=-1)).unsqueeze(1) @ text.transpose(-1, -2)).squeeze(1)


def fewshot_distances(patch_tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """(B, G*G, W) tokens and (N, W) memory -> (B, G*G): 1 - the best cosine similarity with the memory."""
    bank = F.normalize(memory, dim=-1)
    return torch.stack([1 - (F.normalize(t, dim=-1) @ bank.T).amax(dim=-1) for t in patch_tokens])


def vand_loss(maps: Sequence[torch.Tensor], masks: torch.Tensor) -> VANDLoss:
    """Sum over blocks of focal (gamma 2, on both channels) + dice (abnormal channel) of (B, 2, S, S) maps against
    (B, S, S) 0/1 masks, accumulated in the authors' order."""
    focal = [focal_loss(m, masks) for m in maps]
    dice = [dice_loss(m[:, 1], masks) for m in maps]
    total = maps[0].new_zeros(())
    for f, d in zip(focal, dice, strict=True):
        total = total + f + d
    return VANDLoss(total, focal, dice)


def resolve_quick_gelu(config: VANDConfig, native_size: int, built_quick_gelu: bool) -> bool:
    """The activation VAND runs with (see `VANDConfig.activation`)."""
    if config.activation != "official":
        return config.activation == "quick_gelu"
    if openai_style(config.backbone, config.pretrained):
        return config.image_size == native_size
    return built_quick_gelu


def resize_positional_embedding(clip: CLIP, image_size: int) -> None:
    """Give the image tower a grid for `image_size`: open_clip's bicubic, antialiased resize of the position
    embedding (CLS row kept), which is what the authors' factory applies when loading."""
    visual = clip.visual
    grid = image_size // visual.patch_size[0]
    if tuple(visual.grid_size) == (grid, grid):
        return
    state = {"visual.positional_embedding": visual.positional_embedding.detach()}
    visual.grid_size = (grid, grid)
    visual.image_size = (image_size, image_size)
    resize_pos_embed(state, clip)
    visual.positional_embedding = nn.Parameter(state["visual.positional_embedding"], requires_grad=False)


def check_image_size(image_size: int, patch: int) -> None:
    """A ViT takes squares whose side is a multiple of its patch; otherwise name the nearest sizes it takes."""
    if image_size % patch:
        sizes = sorted({max(patch, image_size // patch * patch), (image_size // patch + 1) * patch})
        raise InputSizeError(
            f"image size {image_size} is not a multiple of the backbone's patch size {patch}; "
            f"the nearest sizes it takes are {' and '.join(map(str, sizes))}"
        )


class VAND(Detector):
    """APRIL-GAN behind the detector contract: zero-shot with trained linear layers, few-shot with `k_shot` > 0."""

    name: ClassVar[str] = "vand"
    learns: ClassVar[bool] = True

    def __init__(self, config: VANDConfig, clip: CLIP):
        """Wraps a frozen open_clip CLIP (whose activation and position embedding are set here for `config`); the
        linear layers start from nn.Linear's default init under `config.seed`."""
        super().__init__(config.image_size, sigma=0.0, shots=config.k_shot)
        self.config = config
        visual = clip.visual
        depth = len(visual.transformer.resblocks)
        for name in ("features_list", "few_shot_features"):
            bad = [layer for layer in getattr(config, name) if layer > depth]
            if bad:
                raise ConfigError(f"VANDConfig.{name} has blocks {bad} beyond the backbone's {depth} blocks")
        check_image_size(config.image_size, visual.patch_size[0])
        self.quick_gelu = resolve_quick_gelu(config, visual.image_size[0], uses_quick_gelu(clip))
        set_activation(clip, self.quick_gelu)
        resize_positional_embedding(clip, config.image_size)
        self.clip = freeze(clip)
        self.text = TextEncoder(clip)
        width, embed_dim = visual.conv1.out_channels, visual.output_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.linear = LinearLayers(width, embed_dim, len(config.features_list)).to(visual.conv1.weight.device)
        self._texts: dict[tuple[str, torch.device], torch.Tensor] = {}
        few = set(config.few_shot_features) if config.k_shot else set()
        self.blocks = tuple(sorted(set(config.features_list) | few))
        """The blocks one image pass collects."""

    @classmethod
    def from_config(
        cls,
        config: VANDConfig | None = None,
        device: str | torch.device = "cpu",
        checkpoint: str | os.PathLike | None = None,
    ) -> VAND:
        """Load the backbone (`anomalyclip.backbone`), build the detector, and load linear layers from `checkpoint`."""
        config = config or VANDConfig()
        model = cls(config, load_backbone(config.backbone, config.pretrained, device=device)).to(device)
        if checkpoint is not None:
            load_checkpoint(checkpoint, model)
        return model

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "activation": "quick_gelu" if self.quick_gelu else "gelu",
                "config": self.config.to_dict()}  # fmt: skip

    def text_features(self, category: str) -> torch.Tensor:
        """(2, E) normalised [normal, abnormal] CLIP-AC ensemble with the category name as the authors use it
        (computed once per category and device: the text tower is frozen)."""
        key = (category, self.device)
        if key not in self._texts:
            with torch.no_grad():
                self._texts[key] = ensemble_text_features(self.text, *clip_ac_sentences(category))
        return self._texts[key]

    def encode(self, images: torch.Tensor) -> VANDFeatures:
        """One pass of the image tower: pooled feature and the raw tokens of `self.blocks` (no gradients)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.image_size, self.image_size):
            raise InputSizeError(
                f"expected images of shape (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}"
            )
        with torch.no_grad():
            out = self.clip.visual.forward_intermediates(
                images.to(self.clip.visual.conv1.weight.dtype),
                indices=[block - 1 for block in self.blocks],
                output_fmt="NLC",
                output_extra_tokens=True,
            )
        patches = dict(zip(self.blocks, out["image_intermediates"], strict=True))
        classes = {b: t[:, 0] for b, t in zip(self.blocks, out["image_intermediates_prefix"], strict=True)}
        return VANDFeatures(out["image_features"], patches, classes)

    def segmentation_logits(self, features: VANDFeatures, text: torch.Tensor) -> list[torch.Tensor]:
        """Per block of `features_list` the (B, G*G, 2) logits of the mapped tokens against `text`."""
        mapped = self.linear([features.patch_tokens[b] for b in self.config.features_list])
        return [patch_logits(tokens, text, self.config.scale) for tokens in mapped]

    def segmentation_maps(self, features: VANDFeatures, text: torch.Tensor) -> list[torch.Tensor]:
        """Per block of `features_list` the (B, 2, S, S) probabilities: summed by the zero-shot map, train.py's loss."""
        return probability_maps(self.segmentation_logits(features, text), self.image_size)

    def zero_shot_map(self, features: VANDFeatures, text: torch.Tensor) -> torch.Tensor:
        """(B, S, S): the abnormal probability summed over the blocks of `features_list` (range 0..len)."""
        return torch.stack([m[:, 1] for m in self.segmentation_maps(features, text)]).sum(dim=0)

    def memory(self, references: torch.Tensor, batch_size: int = 8) -> dict[int, torch.Tensor]:
        """Block -> (K*G*G, W) raw patch tokens of the (K, 3, S, S) normal references."""
        parts: dict[int, list[torch.Tensor]] = defaultdict(list)
        for start in range(0, len(references), batch_size):
            features = self.encode(references[start : start + batch_size].to(self.device))
            for block in self.config.few_shot_features:
                parts[block].append(features.patch_tokens[block].float().flatten(0, 1))
        return {block: torch.cat(chunks) for block, chunks in parts.items()}

    def fewshot_map(self, features: VANDFeatures, memory: dict[int, torch.Tensor]) -> torch.Tensor:
        """(B, S, S): the per-block few-shot distances, upsampled and summed."""
        maps = [
            upsample_grid(fewshot_distances(features.patch_tokens[b].float(), memory[b])[..., None], self.image_size)
            for b in self.config.few_shot_features
        ]
        return torch.stack(maps).sum(dim=0)[:, 0]

    def prepare(self, category: str, references: torch.Tensor | None = None) -> VANDPrepared:
        """Text of the category and, few-shot, the memory of the first `k_shot` references."""
        text = self.text_features(category)
        if not self.shots:
            return VANDPrepared(category, text)
        found = 0 if references is None else len(references)
        if found < self.shots:
            raise DataError(
                f"VAND {self.shots}-shot needs {self.shots} normal reference image(s) of category {category!r}, "
                f"found {found}; give the category's normal training images or lower k_shot"
            )
        return VANDPrepared(category, text, self.memory(references[: self.shots]))

    def score(self, images: torch.Tensor, prepared: VANDPrepared) -> DetectorOutput:
        """Image scores (softmax of the pooled feature against the text) and the summed maps (+ few-shot map)."""
        images = images.to(self.device)
        with torch.no_grad():
            features = self.encode(images)
            anomaly = self.zero_shot_map(features, prepared.text)
            if prepared.memory is not None:
                anomaly = anomaly + self.fewshot_map(features, prepared.memory)
            scores = image_logits(features.image_embedding, prepared.text, self.config.scale).softmax(dim=-1)[:, 1]
        return DetectorOutput(image_scores=scores, anomaly_maps=anomaly)

    def finalize_scores(self, image_scores: torch.Tensor, map_maxima: torch.Tensor) -> torch.Tensor:
        """Few-shot (test.py): 0.5 x (image score + max of the map min-max normalised over the category's images);
        a category whose maxima are all equal gets 0 for the second term (the authors' 0/0). Zero-shot: unchanged."""
        if not self.shots:
            return image_scores
        maxima = map_maxima.to(image_scores.device).double()
        spread = maxima.max() - maxima.min()
        normalised = (maxima - maxima.min()) / spread if spread > 0 else torch.zeros_like(maxima)
        return 0.5 * (image_scores.double() + normalised)

    def make_optimizer(self) -> torch.optim.Adam:
        """train.py's optimiser: Adam on the linear layers (torch's default eps and no weight decay)."""
        return torch.optim.Adam(self.linear.parameters(), lr=self.config.lr, betas=self.config.betas)

    def fit(
        self,
        records: Sequence[Record],
        out_dir: str | os.PathLike,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        mask_threshold: int = DEFAULT_MASK_THRESHOLD,
        amp: bool = True,
        progress: bool = True,
        cache_dir: str | os.PathLike | None = None,
        cache: str | None = None,
        cache_dtype: str | None = None,
        resume: bool = False,
        allow_changes: bool = False,
        overwrite: bool = False,
    ) -> VANDFitResult:
        """Train the linear layers on auxiliary `records` with train.py's recipe (shuffled batches, mosaics at
        `mosaic_rate`, focal + dice per block, Adam); writes `epoch_N.pt` (project format) after every epoch.

        The run owns `out_dir` as AnomalyCLIP's training does (`run_folder.claim_run_folder`): a folder with a
        previous run needs `overwrite`. `cache_dir` is unused: mosaics change the images every epoch, so no feature
        cache can serve them, and a `cache` or `cache_dtype` asked for is an error; so is `resume` (with
        `allow_changes`), as the checkpoints keep no optimiser state.

        `amp` runs the frozen backbone under fp16 autocast on a GPU, as the authors' runs do; the linear layers and
        the loss stay fp32. The backbone's tokens are recomputed every epoch (mosaics change the images).
        """
        for name, value in (("cache", cache), ("cache_dtype", cache_dtype)):
            if value is not None:
                raise ConfigError(f"{name} = {value!r} (--{name.replace('_', '-')}): vand keeps no feature cache (its "
                                  "mosaics change the images every epoch); leave it unset")  # fmt: skip
        if resume or allow_changes:
            raise ConfigError("vand cannot resume a training (its checkpoints keep no optimiser state); start again "
                              "with overwrite (--overwrite)")  # fmt: skip
        if not records:
            raise DataError("VAND.fit got no training records; expected the auxiliary dataset's images")
        with claim_run_folder(output_dir(out_dir), resume=False, overwrite=overwrite) as out:
            return self._fit(records, out, epochs, batch_size, num_workers, mask_threshold, amp, progress)

    def _fit(
        self,
        records: Sequence[Record],
        out: Path,
        epochs: int | None,
        batch_size: int | None,
        num_workers: int | None,
        mask_threshold: int,
        amp: bool,
        progress: bool,
    ) -> VANDFitResult:
        epochs = self.config.epochs if epochs is None else epochs
        batch_size = self.config.batch_size if batch_size is None else batch_size
        base = AnomalyDataset(records, self.image_size, mask_threshold, image_transform=self.image_transform(),
                              mask_transform=self.mask_transform())  # fmt: skip
        texts = {c: self.text_features(c) for c in sorted({r.category for r in records})}
        optimizer = self.make_optimizer()
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=amp and self.device.type == "cuda")
        history: list[dict[str, Any]] = []
        checkpoint = out / "epoch_0.pt"
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            data = MosaicDataset(base, self.config.mosaic_rate, self.config.seed, epoch)
            loader = make_loader(data, batch_size, shuffle=True, num_workers=num_workers, seed=self.config.seed + epoch)
            for step, batch in enumerate(tqdm(loader, desc=f"epoch {epoch}/{epochs}", disable=not progress)):
                images = batch["image"].to(self.device)
                masks = batch["mask"][:, 0].to(self.device, torch.float32)
                text = torch.stack([texts[c] for c in batch["category"]])
                with autocast:
                    features = self.encode(images)
                loss = vand_loss(self.segmentation_maps(features.float(), text), masks)
                optimizer.zero_grad()
                loss.total.backward()
                optimizer.step()
                history.append({"epoch": epoch, "step": step, "loss": loss.total.item()})
            mean = float(np.mean([h["loss"] for h in history if h["epoch"] == epoch]))
            log.info("epoch [%d/%d], loss: %.4f", epoch, epochs, mean)
            checkpoint = save_checkpoint(out / f"epoch_{epoch}.pt", self, epoch=epoch, history=history)
        return VANDFitResult(checkpoint, history, epochs, train_seconds=time.perf_counter() - start)


class MosaicDataset(torch.utils.data.Dataset):
    """The authors' MVTec augmentation: with probability `rate` an item becomes a 2x2 mosaic of four images of its
    category (each drawn as a random defect type, `good` included, then a random image of it) and their masks.

    The draws depend on (seed, epoch, index) only, so worker processes and reruns agree.
    """

    def __init__(self, dataset: AnomalyDataset, rate: float, seed: int, epoch: int):
        self.dataset = dataset
        self.rate = rate
        self.seed = seed
        self.epoch = epoch
        groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, record in enumerate(dataset.records):
            groups[record.category][record.defect].append(index)
        self.groups = {c: {d: list(v) for d, v in sorted(g.items())} for c, g in groups.items()}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.rate <= 0 or rng.random() >= self.rate:
            return self.dataset[index]
        record = self.dataset.records[index]
        defects = self.groups[record.category]
        picks = []
        for _ in range(4):
            members = defects[list(defects)[rng.integers(len(defects))]]
            picks.append(self.dataset.records[members[rng.integers(len(members))]])
        image, mask = mosaic([load_pair(r, self.dataset.mask_threshold) for r in picks])
        return {
            "image": self.dataset.image_transform(image),
            "mask": self.dataset.mask_transform(mask),
            "label": int(mask.getbbox() is not None),
            "category": record.category,
            "defect": "mosaic",
            "path": "mosaic:" + "|".join(r.name for r in picks),
        }


def mosaic(pairs: Sequence[tuple[Image.Image, Image.Image]]) -> tuple[Image.Image, Image.Image]:
    """Four (image, mask) pairs -> one RGB image and 'L' mask twice the first one's size, tiles in reading order."""
    width, height = pairs[0][0].size
    image = Image.new("RGB", (2 * width, 2 * height))
    mask = Image.new("L", (2 * width, 2 * height))
    for i, (tile, tile_mask) in enumerate(pairs):
        box = ((i % 2) * width, (i // 2) * height)
        image.paste(tile.convert("RGB").resize((width, height)), box)
        mask.paste(tile_mask.resize((width, height), Image.Resampling.NEAREST), box)
    return image, mask


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A VAND checkpoint (either format), loaded with `weights_only=True`; another method's fails naming both."""
    obj = load_safely(path)
    method = method_of(obj)
    if method is None:
        found = f"keys {sorted(map(str, obj))[:5]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path} is not a VAND checkpoint: expected {{'{CHECKPOINT_KEY}': state_dict}} (the authors' format) or "
            f"a file written by VAND.fit, found {found}"
        )
    if method != VAND.name:
        raise CheckpointError(
            f"{path} is a checkpoint of method {method!r}, not of {VAND.name!r}; pass it to the {method!r} method "
            f"or give a VAND checkpoint"
        )
    state = obj.get(CHECKPOINT_KEY, obj.get("state_dict"))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the linear layers' state dict is missing or holds non-tensors")
    return obj


def checkpoint_config(path: str | os.PathLike) -> VANDConfig | None:
    """The configuration stored in a project checkpoint; None for one in the authors' format (it stores none)."""
    obj = read_checkpoint(path)
    return VANDConfig.from_dict(obj["config"]) if "config" in obj else None


def save_checkpoint(path: str | os.PathLike, model: VAND, **extra: Any) -> Path:
    """The project format: {"method": "vand", "config": ..., "state_dict": linear layers, **extra}, atomically."""
    state = {k: v.detach().cpu() for k, v in model.linear.state_dict().items()}
    return atomic_save({"method": VAND.name, "config": model.config.to_dict(), "state_dict": state, **extra}, path)


def save_official_checkpoint(path: str | os.PathLike, model: VAND) -> Path:
    """The authors' format, loadable by their test.py: {"trainable_linearlayer": state_dict}."""
    return atomic_save({CHECKPOINT_KEY: {k: v.detach().cpu() for k, v in model.linear.state_dict().items()}}, path)


_COMPARED = ("backbone", "pretrained", "features_list", "activation")


def load_checkpoint(path: str | os.PathLike, model: VAND) -> dict[str, Any]:
    """Load the linear layers from either format into `model`; returns the raw checkpoint (epoch, history, ...).

    A project checkpoint made for another backbone or other blocks fails with both values named; one in the authors'
    format is checked by its tensor shapes.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    if "config" in obj:
        saved = VANDConfig.from_dict(obj["config"])
        mismatches = [
            f"{name}: checkpoint has {getattr(saved, name)!r}, configuration has {getattr(model.config, name)!r}"
            for name in _COMPARED
            if getattr(saved, name) != getattr(model.config, name)
        ]
        if mismatches:
            raise CheckpointError(f"{path} does not match the configuration: " + "; ".join(mismatches))
    state = obj.get(CHECKPOINT_KEY, obj.get("state_dict"))
    expected = model.linear.state_dict()
    if set(state) != set(expected):
        raise CheckpointError(
            f"{path} has linear layers {sorted(state)}, the configuration (features_list "
            f"{list(model.config.features_list)}) expects {sorted(expected)}"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, this backbone expects {tuple(tensor.shape)} "
                "(vision width -> embedding width)"
            )
    model.linear.load_state_dict(state)
    return obj
