"""Frozen CLIP backbones from open_clip: hub names, local weight files, or the built-in random `tiny` CLIP.

AnomalyCLIP uses OpenAI's ViT-L/14@336 with QuickGELU. A hub name without a tag means its default pretrained weights
(`openai` where open_clip has them); random weights come only from `tiny` or an explicit `pretrained="none"`. Offline,
a hub name fails at once with a message that says how to pass a local file instead; nothing here retries a download.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, build_model_from_openai_state_dict
from open_clip.transformer import QuickGELU
from torch import nn

from anomalyclip.errors import BackboneError

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_WINDOWS = "tiny-winclip"
"""A second random CLIP for WinCLIP's smoke runs: ViT-B/16's patch at 160 px and 4 blocks, so its hundreds of window
sequences per image stay cheap on a CPU (WinCLIP uses the positional embedding unresized, at the native size)."""
TINY_NAMES = (TINY, TINY_WINDOWS)
TINY_SEED = 0
_OPENAI_KEYS = (
    "visual.conv1.weight",
    "visual.proj",
    "token_embedding.weight",
    "text_projection",
    "ln_final.weight",
)
RANDOM_WEIGHTS = ("none", "random")
"""`pretrained` values that ask for an open_clip architecture with random weights (never what a bare name means)."""


def load_backbone(
    name: str = "ViT-L-14-336",
    pretrained: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = TINY_SEED,
) -> CLIP:
    """A frozen fp32 CLIP in eval mode.

    `name` is an open_clip model name, `tiny` / `tiny-winclip`, an open_clip model config file (`*.json`, with
    `pretrained` its weights file), or a path to a weights file (then `pretrained` is ignored).
    `pretrained` is an open_clip tag, a local file for the architecture `name`, None for the name's default tag
    (see `default_tag`), or "none" for random weights.
    """
    if name in TINY_NAMES:
        model = tiny_clip(seed, windows=name == TINY_WINDOWS)
    elif name.endswith(".json"):
        model = clip_from_model_config(Path(name), pretrained)
    elif _is_file_like(name):
        model = clip_from_file(Path(name))
    elif pretrained and str(pretrained).lower() not in RANDOM_WEIGHTS and _is_file_like(str(pretrained)):
        model = _open_clip_with_file(name, Path(pretrained))
    else:
        model = _open_clip_from_hub(name, pretrained)
    return freeze(model.float()).to(device)


def freeze(model: CLIP) -> CLIP:
    """Eval mode and no gradients: AnomalyCLIP never trains the backbone."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def uses_quick_gelu(model: CLIP) -> bool:
    """Whether the backbone's MLPs use QuickGELU (OpenAI's activation) rather than nn.GELU."""
    return isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def set_activation(model: CLIP, quick_gelu: bool) -> CLIP:
    """Put QuickGELU or nn.GELU into every MLP of both towers; open_clip fixes the choice when it builds a model, and
    the weights do not depend on it (VAND's factory, for one, runs OpenAI weights with GELU off their native size)."""
    for tower in (model.visual.transformer, model.transformer):
        for block in tower.resblocks:
            block.mlp.gelu = QuickGELU() if quick_gelu else nn.GELU()
    return model


def openai_style(name: str, pretrained: str | os.PathLike | None) -> bool:
    """Whether `load_backbone(name, pretrained)` gives OpenAI-format weights (the `openai` tag, a weights file, or
    `tiny`), which are built with QuickGELU; other hub tags keep their open_clip config's activation."""
    if name in TINY_NAMES or _is_file_like(name) or str(pretrained) == "openai":
        return True
    return pretrained is not None and _is_file_like(str(pretrained))


def tiny_clip(seed: int = TINY_SEED, windows: bool = False) -> CLIP:
    """A random CLIP with ViT-L/14@336's structure but width 128 (the conformance bundles' shape), seeded;
    `windows`: the `tiny-winclip` variant (patch 16, 160 px, 4 blocks)."""
    vision = CLIPVisionCfg(layers=24, width=128, head_width=64, patch_size=14, image_size=336)
    if windows:
        vision = CLIPVisionCfg(layers=4, width=128, head_width=64, patch_size=16, image_size=160)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=2, layers=12)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text, quick_gelu=True)


def clip_from_model_config(config: Path, weights: str | os.PathLike | None) -> CLIP:
    """The CLIP an open_clip model config file describes (registered under its file stem), with `weights` loaded
    strictly; how the conformance bundles ship their tiny CLIPs."""
    if not config.is_file():
        raise BackboneError(f"model config {config} does not exist; expected an open_clip model config (*.json)")
    if weights is not None and not Path(weights).is_file():
        raise BackboneError(f"weights file {weights} for the model config {config} does not exist")
    open_clip.add_model_config(config)
    try:
        return open_clip.create_model(config.stem, pretrained=None if weights is None else str(weights))
    except (RuntimeError, KeyError, ValueError) as err:
        raise BackboneError(f"{config} with weights {weights} does not build an open_clip CLIP: {err}") from err


def clip_from_file(path: Path) -> CLIP:
    """Build a CLIP from an OpenAI JIT archive, an OpenAI-layout state dict, or an open_clip checkpoint."""
    state_dict = {k: v for k, v in read_state_dict(path).items() if not k.endswith("attn_mask")}
    missing = [k for k in _OPENAI_KEYS if k not in state_dict]
    if missing:
        raise BackboneError(
            f"{path} is not a CLIP checkpoint: missing {missing}. Expected an OpenAI CLIP file (JIT archive or state "
            "dict) or an open_clip checkpoint of a ViT CLIP; for another architecture pass --backbone NAME "
            "--weights FILE."
        )
    try:
        model = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=True).float()
        # open_clip builds in fp16; loading again in fp32 keeps fp32 checkpoints exact (fp16 ones are unchanged)
        model.load_state_dict({k: v for k, v in state_dict.items() if k in model.state_dict()})
        return model
    except (RuntimeError, KeyError, ValueError) as err:
        raise BackboneError(f"{path} looks like a CLIP state dict but does not build one: {err}") from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a TorchScript archive, a plain state dict, or {'state_dict': …}."""
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as err:
            raise BackboneError(f"{path} is a TorchScript archive that could not be loaded: {err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise BackboneError(f"{path} is not a readable torch checkpoint: {err}") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{path} holds {type(obj).__name__}, expected a dict of tensors (a CLIP state dict)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _is_file_like(value: str) -> bool:
    return value.endswith((".pt", ".pth", ".bin", ".safetensors")) or os.sep in value or Path(value).exists()


def _open_clip_with_file(name: str, path: Path) -> CLIP:
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    try:
        return open_clip.create_model(name, pretrained=str(path), force_quick_gelu=_needs_quick_gelu(name, "openai"))
    except RuntimeError as err:
        raise BackboneError(f"{path} does not fit the open_clip architecture {name!r}: {err}") from err


def _needs_quick_gelu(name: str, tag: str | os.PathLike | None) -> bool:
    return str(tag) == "openai" and not name.endswith("quickgelu")


def default_tag(name: str) -> str:
    """The pretrained tag a bare open_clip name stands for: `openai` where open_clip has it, else its first tag."""
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        raise BackboneError(
            f"open_clip has no pretrained weights for {name!r}; pass a weights file with --pretrained FILE, "
            "or --pretrained none to train on random weights"
        )
    return "openai" if "openai" in tags else tags[0]


def _open_clip_from_hub(name: str, tag: str | os.PathLike | None) -> CLIP:
    if name not in open_clip.list_models():
        raise BackboneError(f"unknown backbone {name!r}: expected 'tiny', a weights file, or an open_clip model name")
    if tag and str(tag).lower() in RANDOM_WEIGHTS:
        from anomalyclip.reports import honesty_banner  # pandas and matplotlib: only when it is needed

        log.warning("%s", honesty_banner(name, str(tag)))
        return open_clip.create_model(name)
    tag = tag or default_tag(name)
    offline_hint = (
        f"could not load pretrained weights {name!r}/{tag!r}: {{err}}. This machine may be offline: download the "
        "weights elsewhere and pass the file, e.g. `--weights ViT-L-14-336px.pt` (OpenAI JIT archive) or "
        "`--backbone ViT-L-14-336 --pretrained /path/open_clip_model.safetensors`."
    )
    try:
        return open_clip.create_model(name, pretrained=str(tag), force_quick_gelu=_needs_quick_gelu(name, tag))
    except Exception as err:  # hub, HTTP and file errors arrive as many types; all mean "no weights"
        raise BackboneError(offline_hint.format(err=err)) from err
