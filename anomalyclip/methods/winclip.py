"""WinCLIP (Jeong et al., CVPR 2023) computed as anomalib 2.7.0's `WinClipModel` does, on open_clip 3.3.0.

Zero-shot: an image is scored against a state x template prompt ensemble; sliding windows of s x s patches are
encoded as short token sequences and their scores are spread back to the patches by a harmonic mean. Few-shot: every
patch and window is compared with a memory of the same embeddings of k normal reference images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from PIL import Image

from anomalyclip.backbone import load_backbone
from anomalyclip.data.transforms import OPENAI_MEAN, OPENAI_STD
from anomalyclip.errors import BackboneError, ConfigError, DataError, InputSizeError
from anomalyclip.methods.base import Detector, DetectorOutput

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")  # fmt: skip
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.",
    "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)  # fmt: skip
"""WinCLIP's compositional prompt ensemble; the repeated jpeg template is in the reference too and is kept."""


def prompt_ensemble(class_name: str) -> tuple[list[str], list[str]]:
    """The normal and the anomalous sentences of `class_name`, state-major (every template of a state in turn)."""

    def sentences(states: Sequence[str]) -> list[str]:
        return [template.format(state.format(class_name)) for state in states for template in TEMPLATES]

    return sentences(NORMAL_STATES), sentences(ANOMALOUS_STATES)


class TensorResizeTransform:
    """PIL image -> (3, S, S): RGB scaled to [0, 1], antialiased bicubic resize of the tensor, then Normalize.

    anomalib's pre-processor; it differs from open_clip's PIL preprocessing by up to 0.04 per pixel.
    """

    def __init__(self, size: int, mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD):
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
        pixels = rgb.to(torch.float32).mul_(1.0 / 255)
        resized = F.interpolate(
            pixels[None], (self.size, self.size), mode="bicubic", align_corners=False, antialias=True
        )[0]
        return (resized - self.mean) / self.std

    def unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the Normalize step of (..., 3, S, S) images: the resized [0, 1] pixels."""
        return images * self.std.to(images) + self.mean.to(images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class NearestMaskTransform:
    """Binary 'L' mask -> (1, S, S) float 0/1: every non-zero pixel is anomalous, nearest resize."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, mask: Image.Image | None) -> torch.Tensor:
        if mask is None:
            return torch.zeros(1, self.size, self.size)
        binary = torch.from_numpy(np.asarray(mask.convert("L")) > 0).to(torch.float32)
        return F.interpolate(binary[None, None], (self.size, self.size), mode="nearest")[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


@dataclass
class WinCLIPConfig:
    """WinCLIP's settings; the defaults are the paper's backbone (ViT-B/16+ at 240 px, LAION-400M) and windows."""

    backbone: str = "ViT-B-16-plus-240"
    pretrained: str | None = "laion400m_e31"
    image_size: int | None = None
    """Input size; None = the backbone's native size (240 for ViT-B/16+), the only one the reference accepts."""
    scales: tuple[int, ...] = (2, 3)
    """Window sizes in patches."""
    temperature: float = 0.07
    k_shot: int = 0
    """Normal reference images per category (0 = zero-shot)."""
    unnormalized_references: bool = False
    """Reproduce anomalib 2.7.0's Engine, which feeds the few-shot references resized but not normalised."""

    def __post_init__(self) -> None:
        self.scales = tuple(self.scales)
        if not self.backbone:
            raise ConfigError("winclip.backbone is empty; expected an open_clip model name, a model config or a file")
        if self.image_size is not None and (not _is_int(self.image_size) or self.image_size <= 0):
            raise ConfigError(
                f"winclip.image_size={self.image_size!r}; expected a positive integer (240 for ViT-B/16+)"
            )
        if not self.scales or not all(_is_int(s) and s >= 1 for s in self.scales):
            raise ConfigError(f"winclip.scales={self.scales!r}; expected a non-empty tuple of window sizes >= 1")
        if (
            not isinstance(self.temperature, (int, float))
            or isinstance(self.temperature, bool)
            or self.temperature <= 0
        ):
            raise ConfigError(f"winclip.temperature={self.temperature!r}; expected a number > 0")
        if not _is_int(self.k_shot) or self.k_shot < 0:
            raise ConfigError(f"winclip.k_shot={self.k_shot!r}; expected an integer >= 0 (0 = zero-shot)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class FewShotMemory:
    """The raw embeddings of the k reference images: patches (k, N, W) and one (k, n_s, E) tensor per scale."""

    patches: torch.Tensor
    windows: tuple[torch.Tensor, ...]


@dataclass
class WinCLIPState:
    """What `prepare` gives `score` for one category."""

    class_name: str
    text: torch.Tensor
    """(2, E) mean raw text embedding of the normal and of the anomalous prompts (not normalised)."""
    memory: FewShotMemory | None = None


@dataclass
class ImageEmbeddings:
    """What the vision tower gives for a batch."""

    tokens: torch.Tensor
    """(B, 1+N, W) patch tokens with class token and positional embedding, before `ln_pre`; windows are cut here."""
    image: torch.Tensor
    """(B, E) pooled and projected embedding."""
    patches: torch.Tensor
    """(B, N, W) patch tokens after `ln_post`, not projected."""
    windows: tuple[torch.Tensor, ...]
    """One (B, n_s, E) tensor of window embeddings per scale."""


@dataclass
class BranchMaps:
    """One branch (zero-shot: text, few-shot: memory) on the G x G grid: window scores, per-scale maps, fusion."""

    window_scores: tuple[torch.Tensor, ...]
    scale_maps: tuple[torch.Tensor, ...]
    map: torch.Tensor
    patch_scores: torch.Tensor | None = None
    """(B, N) few-shot patch scores (the few-shot branch only)."""


@dataclass
class WinCLIPMaps:
    """Every stage of scoring a batch, before the upsampling to the input size."""

    image_scores: torch.Tensor
    """(B,) zero-shot class score of the whole image."""
    zero_shot: BranchMaps
    few_shot: BranchMaps | None
    grid_map: torch.Tensor
    """(B, G, G) final map: the zero-shot map, or its mean with the few-shot map."""
    pred_scores: torch.Tensor


def window_indices(grid: tuple[int, int], scale: int) -> torch.Tensor:
    """(scale², n) patch indices of every scale x scale window at stride 1; column m is window m (row-major)."""
    height, width = grid
    cells = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width)
    return F.unfold(cells, kernel_size=scale)[0].round().long()


def class_scores(embeddings: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probability of the anomalous class: softmax over [normal, anomalous] of cosine / temperature."""
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(text, dim=-1).T
    return (cosine / temperature).softmax(dim=-1)[..., 1]


def association_scores(embeddings: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """(B, N) half cosine distance of each embedding to its nearest one anywhere in the (k, M, D) memory."""
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(memory.reshape(-1, memory.shape[-1]), dim=-1).T
    return (1 - cosine).amin(dim=-1) / 2


def harmonic_aggregation(window_scores: torch.Tensor, windows: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, n) window scores -> (B, G, G): per patch, the harmonic mean of the windows covering it (0 where none)."""
    cells = grid[0] * grid[1]
    index = windows.reshape(-1)
    inverse = (1 / window_scores).repeat(1, windows.shape[0])
    sums = window_scores.new_zeros(window_scores.shape[0], cells).scatter_add_(
        1, index.expand(window_scores.shape[0], -1), inverse
    )
    counts = torch.bincount(index, minlength=cells).to(window_scores.dtype)
    return (counts / sums).view(-1, *grid).nan_to_num(posinf=0.0)


def upsample(grid_map: torch.Tensor, size: int) -> torch.Tensor:
    """(B, G, G) -> (B, size, size), bilinear without corner alignment (the reference applies no smoothing)."""
    return F.interpolate(grid_map[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


class WinCLIP(Detector):
    """Zero- and few-shot WinCLIP on a frozen open_clip ViT; maps are not smoothed (`sigma` = 0) as in the reference.

    `prepare(category, references)` encodes the prompt ensemble of the category name (as given) and, when `shots`
    > 0, the first `shots` references into a `FewShotMemory`; it returns a `WinCLIPState`.
    """

    name = "winclip"

    def __init__(self, clip: CLIP, config: WinCLIPConfig | None = None):
        config = config or WinCLIPConfig()
        grid = _check_backbone(clip, config)
        native = grid[0] * int(clip.visual.patch_size[0])
        config = dataclasses.replace(config, image_size=config.image_size or native)
        super().__init__(config.image_size, sigma=0.0, shots=config.k_shot)
        self.config = config
        self.clip = clip
        self.grid = grid
        device = clip.visual.conv1.weight.device
        for position, scale in enumerate(config.scales):
            self.register_buffer(f"windows_{position}", window_indices(self.grid, scale).to(device), persistent=False)
        self._transform = TensorResizeTransform(config.image_size)

    @classmethod
    def from_config(cls, config: WinCLIPConfig, device: str | torch.device = "cpu") -> WinCLIP:
        """Load the configured backbone (hub name, model config + weights, or file) and build the detector."""
        clip = load_backbone(config.backbone, config.pretrained, device=device)
        return cls(clip, config).to(device)

    @property
    def windows(self) -> tuple[torch.Tensor, ...]:
        """The (s², n_s) window indices of each scale."""
        return tuple(getattr(self, f"windows_{position}") for position in range(len(self.config.scales)))

    def train(self, mode: bool = True) -> WinCLIP:
        """The backbone always stays in eval mode (nothing trains)."""
        super().train(mode)
        self.clip.eval()
        return self

    def image_transform(self) -> TensorResizeTransform:
        return self._transform

    def mask_transform(self) -> NearestMaskTransform:
        return NearestMaskTransform(self.image_size)

    def tokenize(self, sentences: Sequence[str]) -> torch.Tensor:
        """(N, context_length) BPE token ids on the detector's device."""
        return open_clip.tokenize(list(sentences), context_length=self.clip.context_length).to(self.device)

    @torch.no_grad()
    def encode_sentences(self, sentences: Sequence[str]) -> torch.Tensor:
        """(N, E) raw `encode_text` embeddings (not normalised)."""
        return self.clip.encode_text(self.tokenize(sentences))

    def text_embeddings(self, class_name: str) -> torch.Tensor:
        """(2, E): the means of the raw normal and of the raw anomalous prompt embeddings."""
        return torch.stack([self.encode_sentences(s).mean(dim=0) for s in prompt_ensemble(class_name)])

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> ImageEmbeddings:
        """Image, patch and window embeddings of a (B, 3, S, S) batch."""
        self._check_size(images)
        visual = self.clip.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        tokens = visual.patch_dropout(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
        encoded = self._finish(tokens)
        return ImageEmbeddings(
            tokens=tokens,
            image=self._project(encoded[:, 0]),
            patches=encoded[:, 1:],
            windows=tuple(self._window_embeddings(tokens, windows) for windows in self.windows),
        )

    def _finish(self, tokens: torch.Tensor) -> torch.Tensor:
        """`ln_pre`, every block, `ln_post` (the transformer of open_clip 3.x is batch-first)."""
        visual = self.clip.visual
        return visual.ln_post(visual.transformer(visual.ln_pre(tokens)))

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        proj = self.clip.visual.proj
        return pooled if proj is None else pooled @ proj

    def _window_embeddings(self, tokens: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """(B, n, E): each window is its own sequence, class token plus its s² tokens with their original positions."""
        index = torch.cat([windows.new_zeros(1, windows.shape[1]), windows + 1]).T
        sequences = tokens[:, index].flatten(0, 1)
        pooled = self._finish(sequences)[:, 0]
        return self._project(pooled).view(tokens.shape[0], windows.shape[1], -1)

    def memory(self, references: torch.Tensor) -> FewShotMemory:
        """The few-shot memory of (k, 3, S, S) normal references preprocessed with `image_transform()`."""
        if self.config.unnormalized_references:
            references = self._transform.unnormalize(references)
        embedded = self.encode(references.to(self.device))
        return FewShotMemory(patches=embedded.patches, windows=embedded.windows)

    def prepare(self, category: str, references: torch.Tensor | None = None) -> WinCLIPState:
        memory = None
        if self.shots:
            found = 0 if references is None else len(references)
            if found < self.shots:
                raise DataError(
                    f"winclip {self.shots}-shot needs {self.shots} normal reference images of category "
                    f"{category!r}, found {found}; add train/good images or lower k_shot"
                )
            memory = self.memory(references[: self.shots])
        return WinCLIPState(class_name=category, text=self.text_embeddings(category), memory=memory)

    @torch.no_grad()
    def grid_maps(self, embedded: ImageEmbeddings, prepared: WinCLIPState) -> WinCLIPMaps:
        """Every scoring stage of an encoded batch on the G x G grid."""
        image_scores = class_scores(embedded.image, prepared.text, self.config.temperature)
        window_scores = tuple(class_scores(w, prepared.text, self.config.temperature) for w in embedded.windows)
        scale_maps = self._aggregate(window_scores)
        full = image_scores[:, None, None].expand(-1, *self.grid)
        zero_shot_map = (len(scale_maps) + 1) / (1 / torch.stack([full, *scale_maps])).sum(dim=0)
        zero_shot = BranchMaps(window_scores, scale_maps, zero_shot_map)
        if prepared.memory is None:
            return WinCLIPMaps(image_scores, zero_shot, None, zero_shot_map, image_scores)
        memory = prepared.memory
        patch_scores = association_scores(embedded.patches, memory.patches)
        fs_window_scores = tuple(
            association_scores(w, m) for w, m in zip(embedded.windows, memory.windows, strict=True)
        )
        fs_scale_maps = self._aggregate(fs_window_scores)
        few_shot_map = torch.stack([patch_scores.view(-1, *self.grid), *fs_scale_maps]).mean(dim=0)
        few_shot = BranchMaps(fs_window_scores, fs_scale_maps, few_shot_map, patch_scores)
        pred_scores = (image_scores + few_shot_map.amax(dim=(-2, -1))) / 2
        return WinCLIPMaps(image_scores, zero_shot, few_shot, (zero_shot_map + few_shot_map) / 2, pred_scores)

    def _aggregate(self, window_scores: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(harmonic_aggregation(s, w, self.grid) for s, w in zip(window_scores, self.windows, strict=True))

    def score(self, images: torch.Tensor, prepared: WinCLIPState) -> DetectorOutput:
        maps = self.grid_maps(self.encode(images.to(self.device)), prepared)
        return DetectorOutput(image_scores=maps.pred_scores, anomaly_maps=upsample(maps.grid_map, self.image_size))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **dataclasses.asdict(self.config)}

    def _check_size(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size) or images.ndim != 4:
            raise InputSizeError(
                f"winclip got images of shape {tuple(images.shape)}; expected (B, 3, {self.image_size}, "
                f"{self.image_size}) from its image_transform()"
            )


def _check_backbone(clip: CLIP, config: WinCLIPConfig) -> tuple[int, int]:
    """The patch grid of `clip`'s ViT, after checking the ViT, the image size and the window sizes fit it."""
    visual = getattr(clip, "visual", None)
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "grid_size")
    if visual is None or not all(hasattr(visual, part) for part in needed):
        raise BackboneError(f"winclip needs an open_clip ViT backbone; {config.backbone!r} has no plain ViT tower")
    if getattr(visual, "attn_pool", None) is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise BackboneError(
            f"winclip needs a ViT pooled by its class token after ln_post; {config.backbone!r} pools "
            f"{visual.pool_type!r} (attentional pooler: {visual.attn_pool is not None})"
        )
    grid = tuple(int(g) for g in visual.grid_size)
    patch = int(visual.patch_size[0])
    native = grid[0] * patch
    if grid[0] != grid[1] or config.image_size not in (None, native):
        raise InputSizeError(
            f"winclip.image_size={config.image_size} does not fit backbone {config.backbone!r}: its positional "
            f"embedding is used unresized and is for a {grid[0]}x{grid[1]} grid of {patch}-px patches; the nearest "
            f"valid size is {native}"
        )
    if max(config.scales) > min(grid):
        raise ConfigError(
            f"winclip.scales={config.scales}: a window of {max(config.scales)} patches does not fit the "
            f"{grid[0]}x{grid[1]} patch grid of {config.backbone!r}; allowed window sizes are 1..{min(grid)}"
        )
    return grid
