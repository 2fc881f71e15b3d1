"""Prompt checkpoints: the official `{"prompt_learner": state_dict}` format and the project's own, which records
the configuration so that a mismatch fails with both values named.

Both hold only tensors and plain values, so they are read with `torch.load(weights_only=True)`: a downloaded file
can never run code while it loads.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.errors import CheckpointError
from anomalyclip.files import atomic_write
from anomalyclip.prompts import PromptLearner

FORMAT = "anomalyclip-prompts"
FORMAT_VERSION = 1
_PROJECTION_WIDTH = 896
"""Output width of the official, never-used `compound_prompt_projections` (kept for file compatibility)."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save as a whole file (see `files.atomic_write`): a crash never leaves a half-written checkpoint."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def load_safely(path: str | os.PathLike) -> Any:
    """What a checkpoint file holds, read without running code (`weights_only=True`), or a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"refers to {found.group(1)}" if found else "holds objects"
        raise CheckpointError(
            f"{path} {what}, not only tensors and plain values, so it was not loaded (loading it could run code); "
            "expected a checkpoint written by `anomalyclip train` or an official one (epoch_15.pth, APRIL-GAN)"
        ) from err
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {err}") from err


def method_of(obj: Any) -> str | None:
    """Which method wrote a checkpoint: the project format's `method`, else what an official layout says."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("method"), str):
        return obj["method"]
    if "trainable_linearlayer" in obj:
        return "vand"
    if "prompt_learner" in obj:
        return "anomalyclip"
    return None


def checkpoint_method(path: str | os.PathLike) -> str:
    """The method a checkpoint file belongs to, or an error saying what was expected."""
    method = method_of(load_safely(path))
    if method is None:
        raise CheckpointError(f"{path} is not a checkpoint of any method; expected one written by `anomalyclip "
                              "train` or an official AnomalyCLIP / APRIL-GAN file")  # fmt: skip
    return method


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw prompt checkpoint dict, read without running code, with a clear error for a wrong file."""
    obj = load_safely(path)
    if not isinstance(obj, dict) or "prompt_learner" not in obj:
        raise CheckpointError(
            f"{path} is not a prompt checkpoint: expected a dict with a 'prompt_learner' state dict (official "
            f"format) or a file written by `anomalyclip train`, got {type(obj).__name__}"
        )
    return obj


def checkpoint_config(path: str | os.PathLike) -> AnomalyCLIPConfig | None:
    """The configuration stored in a project checkpoint; None for an official one (it stores none)."""
    obj = read_checkpoint(path)
    return AnomalyCLIPConfig.from_dict(obj["config"]) if obj.get("format") == FORMAT else None


def save_checkpoint(path: str | os.PathLike, learner: PromptLearner, config: AnomalyCLIPConfig, **extra: Any) -> Path:
    """The project format: prompt state, full configuration, and any extra state (epoch, optimiser, history)."""
    state = {k: v.detach().cpu() for k, v in learner.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "prompt_learner": state,
    }
    return atomic_save({**payload, **extra}, path)


def save_official_checkpoint(path: str | os.PathLike, learner: PromptLearner) -> Path:
    """The official layout, loadable by zqhang/AnomalyCLIP's test.py (buffers and unused projections included)."""
    if learner.ctx_neg is None or not learner.config.deep_tokens:
        raise CheckpointError("the official format needs separate normal/abnormal contexts and deep tokens")
    width = learner.ctx_pos.shape[-1]
    state: dict[str, torch.Tensor] = {
        "ctx_pos": learner.ctx_pos.detach().cpu(),
        "ctx_neg": learner.ctx_neg.detach().cpu(),
        "token_prefix_pos": learner.token_prefix[0].view(1, 1, 1, width).cpu(),
        "token_suffix_pos": learner.token_suffix[0].view(1, 1, -1, width).cpu(),
        "token_prefix_neg": learner.token_prefix[1].view(1, 1, 1, width).cpu(),
        "token_suffix_neg": learner.token_suffix[1].view(1, 1, -1, width).cpu(),
        "tokenized_prompts_pos": learner.tokenized_prompts[0].view(1, 1, -1).int().cpu(),
        "tokenized_prompts_neg": learner.tokenized_prompts[1].view(1, 1, -1).int().cpu(),
    }
    generator = torch.Generator().manual_seed(0)
    bound = width**-0.5
    for i, tokens in enumerate(learner.compound_prompts_text):
        state[f"compound_prompts_text.{i}"] = tokens.detach().cpu()
        weight = (torch.rand(_PROJECTION_WIDTH, width, generator=generator) * 2 - 1) * bound
        state[f"compound_prompt_projections.{i}.weight"] = weight
        state[f"compound_prompt_projections.{i}.bias"] = (
            torch.rand(_PROJECTION_WIDTH, generator=generator) * 2 - 1
        ) * bound
    return atomic_save({"prompt_learner": state}, path)


def load_checkpoint(
    path: str | os.PathLike, learner: PromptLearner, config: AnomalyCLIPConfig | None = None
) -> dict[str, Any]:
    """Load prompts from either format into `learner`; returns the raw checkpoint (epoch, history, …).

    A project checkpoint whose configuration differs from `config` in anything that shapes the prompts or the
    features fails with both values named; an official one is checked by tensor shapes.
    """
    obj = read_checkpoint(path)
    if obj.get("format") == FORMAT and config is not None:
        _check_config(Path(path), AnomalyCLIPConfig.from_dict(obj["config"]), config)
    state = obj["prompt_learner"]
    _check_shapes(Path(path), state, learner)
    own_keys = set(learner.state_dict())
    learner.load_state_dict({k: v for k, v in state.items() if k in own_keys}, strict=True)
    return obj


_COMPARED = (
    ("prompt", "n_ctx"),
    ("prompt", "depth"),
    ("prompt", "t_n_ctx"),
    ("prompt", "deep_tokens"),
    ("prompt", "shared_context"),
    ("prompt", "object_word"),
    ("prompt", "state_word"),
    ("prompt", "normal_word"),
    ("prompt", "object_aware"),
    ("vision", "features_list"),
    ("vision", "dpam_blocks"),
    ("vision", "dpam_mode"),
    ("backbone", None),
)


def _check_config(path: Path, saved: AnomalyCLIPConfig, wanted: AnomalyCLIPConfig) -> None:
    mismatches = []
    for section, key in _COMPARED:
        a = getattr(saved, section) if key is None else getattr(getattr(saved, section), key)
        b = getattr(wanted, section) if key is None else getattr(getattr(wanted, section), key)
        if a != b:
            name = section if key is None else f"{section}.{key}"
            mismatches.append(f"{name}: checkpoint has {a!r}, configuration has {b!r}")
    if mismatches:
        raise CheckpointError(f"{path} does not match the configuration: " + "; ".join(mismatches))


def _check_shapes(path: Path, state: dict[str, torch.Tensor], learner: PromptLearner) -> None:
    expected = learner.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{path} lacks prompt parameters {missing}; it was made with another configuration")
    deep_saved = sum(k.startswith("compound_prompts_text.") for k in state)
    if deep_saved != len(learner.compound_prompts_text):
        raise CheckpointError(
            f"{path} has {deep_saved} deep-token layers (depth {deep_saved + 1}), "
            f"the configuration expects {len(learner.compound_prompts_text)} (depth {learner.config.depth})"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, the configuration expects {tuple(tensor.shape)} "
                f"(prompt length n_ctx={learner.config.n_ctx}, deep-token length t_n_ctx={learner.config.t_n_ctx}, "
                f"text width {tensor.shape[-1]})"
            )
