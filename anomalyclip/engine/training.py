"""Training of the prompts with the official recipe: Adam on the prompt learner, glocal loss, a checkpoint per epoch.

With the feature cache (the default) the frozen backbone runs once; every epoch after that costs only the text side
and the head. Batches follow a permutation that depends on (seed, epoch) alone, so a resumed run repeats exactly what
an uninterrupted one does.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from anomalyclip.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.data import AnomalyDataset, Record
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.engine.features import FeatureBatch, FeatureCache, device_autocast
from anomalyclip.engine.run_folder import claim_run_folder
from anomalyclip.errors import AnomalyCLIPError, CheckpointError, ConfigError, DataError
from anomalyclip.files import atomic_write_text, output_dir
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)

CacheMode = Literal["memory", "disk", "none"]
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")


@dataclass
class TrainResult:
    """What a run produced: the last checkpoint, the loss history, and where the time went."""

    checkpoint: Path
    history: list[dict] = field(default_factory=list)
    epochs: int = 0
    cache_seconds: float = 0.0
    train_seconds: float = 0.0
    changes: list[dict] = field(default_factory=list)
    """Settings changed on `--resume --allow-changes`: {epoch, setting, before, after} each."""


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one epoch, a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = epoch_order(n, seed, epoch)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def latest_checkpoint(out_dir: Path) -> tuple[int, Path] | None:
    """The highest `epoch_N.pt` in `out_dir`, if any."""
    found = [(int(m.group(1)), p) for p in out_dir.glob("epoch_*.pt") if (m := _EPOCH_FILE.search(p.name))]
    return max(found) if found else None


class ImageBatches:
    """Uncached batches: decode, transform and encode the images of each batch (the official, slow path)."""

    def __init__(self, model: AnomalyCLIP, dataset: AnomalyDataset):
        self.model = model
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: Sequence[int], device: torch.device | str) -> FeatureBatch:
        items = [self.dataset[i] for i in indices]
        images = torch.stack([it["image"] for it in items]).to(device)
        with device_autocast(self.model.device):
            features = self.model.encode_image(images)
        features.global_embedding = features.global_embedding.float()
        features.patch_tokens = [t.float() for t in features.patch_tokens]
        masks = torch.stack([it["mask"][0] for it in items]).to(device)
        labels = torch.tensor([it["label"] for it in items], device=device)
        return FeatureBatch(features, masks, labels, [it["category"] for it in items])


def train(
    model: AnomalyCLIP,
    records: Sequence[Record],
    out_dir: str | Path,
    *,
    cache: CacheMode = "memory",
    cache_dtype: str = "fp32",
    cache_dir: str | Path | None = None,
    resume: bool = False,
    allow_changes: bool = False,
    overwrite: bool = False,
    num_workers: int | None = None,
    mask_threshold: int = DEFAULT_MASK_THRESHOLD,
    progress: bool = True,
    on_step: Callable[[dict], None] | None = None,
    method: str = "anomalyclip",
) -> TrainResult:
    """Train `model.prompt_learner` on `records` (the auxiliary dataset's test split in the paper's protocol).

    `method` (`anomalyclip` or `coop`) is recorded in every checkpoint, so that it is never loaded as the other.

    The run owns `out_dir` while it runs (see `run_folder.claim_run_folder`): a folder with a previous run needs
    `resume` or `overwrite`, and `resume` refuses changed settings unless `allow_changes`.
    """
    if not records:
        raise DataError("no training images: expected at least one record")
    with claim_run_folder(output_dir(out_dir), resume=resume, overwrite=overwrite) as folder:
        return _train(model, records, folder, cache, cache_dtype, cache_dir, resume, allow_changes, num_workers,
                      mask_threshold, progress, on_step, method)  # fmt: skip


def _train(model, records, out_dir, cache, cache_dtype, cache_dir, resume, allow_changes, num_workers,
           mask_threshold, progress, on_step, method) -> TrainResult:  # fmt: skip
    recipe = model.config.train
    dataset = AnomalyDataset(records, model.config.vision.image_size, mask_threshold)
    optimizer = torch.optim.Adam(model.prompt_learner.parameters(), lr=recipe.lr, betas=recipe.betas)
    history: list[dict] = []
    changes: list[dict] = []
    first_epoch = 1
    if resume:
        first_epoch, history, changes = _resume(model, optimizer, out_dir, allow_changes)

    start = time.perf_counter()
    source = _batch_source(model, dataset, cache, cache_dtype, cache_dir, out_dir, recipe.batch_size, num_workers,
                           progress)  # fmt: skip
    cache_seconds = time.perf_counter() - start
    checkpoint = out_dir / f"epoch_{first_epoch - 1}.pt"
    size = model.config.vision.image_size
    model.train()
    start = time.perf_counter()
    for epoch in range(first_epoch, recipe.epochs + 1):
        batches = epoch_batches(len(source), recipe.batch_size, recipe.seed, epoch)
        bar = tqdm(batches, desc=f"epoch {epoch}/{recipe.epochs}", disable=not progress, unit="batch")
        for step, indices in enumerate(bar):
            batch = source.batch(indices, model.device)
            loss, _ = model.loss(batch.features, batch.labels, batch.masks, size, batch.categories)
            optimizer.zero_grad()
            loss.total.backward()
            optimizer.step()
            row = {"epoch": epoch, "step": step, "global": loss.global_loss.item(), "local": loss.local_loss.item(),
                   "total": loss.total.item()}  # fmt: skip
            history.append(row)
            bar.set_postfix(loss=f"{row['total']:.4f}")
            if on_step is not None:
                on_step(row)
        summary = epoch_summary(history, epoch)
        log.info("epoch [%d/%d] loss %.4f (local %.4f, global %.4f)", epoch, recipe.epochs, summary["total"],
                 summary["local"], summary["global"])  # fmt: skip
        checkpoint = save_checkpoint(out_dir / f"epoch_{epoch}.pt", model.prompt_learner, model.config, epoch=epoch,
                                     optimizer=optimizer.state_dict(), history=history, method=method,
                                     changes=changes)  # fmt: skip
        _write_history(out_dir, history, changes)
    model.eval()
    return TrainResult(checkpoint, history, recipe.epochs, cache_seconds, time.perf_counter() - start, changes)


def epoch_summary(history: Sequence[dict], epoch: int) -> dict[str, float]:
    """Mean global, local and total loss of one epoch."""
    rows = [r for r in history if r["epoch"] == epoch]
    return {k: sum(r[k] for r in rows) / len(rows) for k in ("global", "local", "total")}


def _batch_source(model, dataset, cache, cache_dtype, cache_dir, out_dir, batch_size, num_workers, progress):
    if cache == "none":
        return ImageBatches(model, dataset)
    if cache not in ("memory", "disk"):
        raise AnomalyCLIPError(f"cache mode {cache!r}; expected 'memory', 'disk' or 'none'")
    directory = (Path(cache_dir) if cache_dir else out_dir / "feature_cache") if cache == "disk" else None
    return FeatureCache.build(model, dataset, dtype=cache_dtype, directory=directory, batch_size=batch_size,
                              num_workers=num_workers, progress=progress)  # fmt: skip


def _resume(
    model: AnomalyCLIP, optimizer: torch.optim.Optimizer, out_dir: Path, allow_changes: bool
) -> tuple[int, list[dict], list[dict]]:
    """Prompts, optimiser state, history and recorded changes of the last epoch in `out_dir`; the first new epoch."""
    latest = latest_checkpoint(out_dir)
    if latest is None:
        log.info("resume: no epoch_N.pt in %s, starting from epoch 1", out_dir)
        return 1, [], []
    epoch, path = latest
    obj = load_checkpoint(path, model.prompt_learner, model.config)
    if obj.get("format") != FORMAT or "optimizer" not in obj:
        raise CheckpointError(f"{path} has no optimiser state; it cannot be resumed (was it written by train?)")
    changed = config_changes(AnomalyCLIPConfig.from_dict(obj["config"]), model.config)
    if changed and not allow_changes:
        listed = "; ".join(f"{name}: run has {before!r}, now {after!r}" for name, (before, after) in changed.items())
        raise ConfigError(
            f"--resume of {path} with changed settings ({listed}); pass the run's own settings, or --allow-changes "
            "to continue with the new ones (the change is recorded in the run)"
        )
    optimizer.load_state_dict(obj["optimizer"])
    for group in optimizer.param_groups:  # the saved state carries the old values; the run goes on with the new ones
        group["lr"], group["betas"] = model.config.train.lr, model.config.train.betas
    changes = list(obj.get("changes", []))
    for name, (before, after) in changed.items():
        log.warning("resume: %s changes from %r to %r at epoch %d", name, before, after, epoch + 1)
        changes.append({"epoch": epoch + 1, "setting": name, "before": before, "after": after})
    log.info("resume: continuing after epoch %d from %s", epoch, path)
    return epoch + 1, list(obj.get("history", [])), changes


def config_changes(saved: AnomalyCLIPConfig, current: AnomalyCLIPConfig) -> dict[str, tuple]:
    """'section.key': (saved, current) for every setting that differs; `train.epochs` is not a change (a larger
    value is how a finished run is extended)."""
    flat_saved, flat_current = _flatten(saved.to_dict()), _flatten(current.to_dict())
    return {
        name: (flat_saved.get(name), value)
        for name, value in flat_current.items()
        if name != "train.epochs" and flat_saved.get(name) != value
    }


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _write_history(out_dir: Path, history: list[dict], changes: list[dict]) -> None:
    atomic_write_text(out_dir / "history.json", json.dumps(history))
    lines = ["epoch,step,global,local,total"]
    lines += [f"{r['epoch']},{r['step']},{r['global']:.6f},{r['local']:.6f},{r['total']:.6f}" for r in history]
    atomic_write_text(out_dir / "history.csv", "\n".join(lines) + "\n")
    if changes:
        atomic_write_text(out_dir / "changes.json", json.dumps(changes, indent=1))


def load_history(out_dir: str | Path) -> list[dict]:
    """The per-step loss history of a run folder (written after every epoch)."""
    path = Path(out_dir) / "history.json"
    if not path.is_file():
        raise AnomalyCLIPError(f"{path} does not exist; expected a folder written by `anomalyclip train`")
    return json.loads(path.read_text())
