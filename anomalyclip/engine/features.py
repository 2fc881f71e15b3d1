"""A feature cache: the frozen backbone's outputs for each training image, computed once and reused every epoch.

The backbone is frozen and the official recipe has no augmentation, so an image's global embedding and patch tokens
are the same in every epoch; only the cheap text side changes. Kept in memory or in `.npy` memory maps on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from anomalyclip.data import AnomalyDataset, make_loader
from anomalyclip.errors import ConfigError, DataError
from anomalyclip.model import AnomalyCLIP
from anomalyclip.vision import VisualFeatures

log = logging.getLogger(__name__)

CACHE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


@dataclass
class FeatureBatch:
    """Features, binary masks (B, S, S) and labels (B,) of a batch of training images."""

    features: VisualFeatures
    masks: torch.Tensor
    labels: torch.Tensor
    categories: list[str]


def cache_key(model: AnomalyCLIP, dataset: AnomalyDataset, dtype: str = "fp32") -> str:
    """A digest of everything the cached arrays depend on: backbone and its weights, vision settings, transforms,
    storage type, and each image and mask by content (size, mtime and a digest of the bytes), not by name."""
    vision = model.config.vision
    fingerprints: dict[Path, list] = {}
    for record in dataset.records:
        for path in (record.image, record.mask):
            if path is not None and path not in fingerprints:
                fingerprints[Path(path)] = file_fingerprint(Path(path))
    payload = {
        "backbone": model.config.backbone,
        "pretrained": str(model.config.pretrained),
        "features_list": list(vision.features_list),
        "dpam_blocks": vision.dpam_blocks,
        "dpam_mode": vision.dpam_mode,
        "global_ln_post": vision.global_ln_post,
        "image_transform": repr(dataset.image_transform),
        "mask_transform": repr(dataset.mask_transform),
        "mask_threshold": dataset.mask_threshold,
        "dtype": dtype,
        "records": [[r.name, r.label, r.category, str(r.mask)] for r in dataset.records],
        "files": {str(path): value for path, value in fingerprints.items()},
        "weights": float(model.clip.visual.proj.double().sum()),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def file_fingerprint(path: Path) -> list:
    """[size, mtime in ns, BLAKE2 digest of the bytes]: a file rewritten in place changes it even under its old name.

    Reading every file costs far less than the backbone pass over them that a reused cache saves.
    """
    try:
        stat = path.stat()
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err}); expected the file the dataset lists") from err
    return [stat.st_size, stat.st_mtime_ns, digest]


class FeatureCache:
    """Global embeddings, per-layer patch tokens, masks and labels of N images, indexable by batches."""

    def __init__(self, global_embedding, patch_tokens: Sequence, masks, labels, categories: Sequence[str]):
        self.global_embedding = global_embedding
        self.patch_tokens = list(patch_tokens)
        self.masks = masks
        self.labels = labels
        self.categories = list(categories)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def build(
        cls,
        model: AnomalyCLIP,
        dataset: AnomalyDataset,
        *,
        dtype: str = "fp32",
        directory: str | Path | None = None,
        batch_size: int = 8,
        num_workers: int | None = None,
        progress: bool = True,
    ) -> FeatureCache:
        """One backbone pass over `dataset`; with `directory`, memory-mapped `.npy` files reused when the key fits.

        Builders of one directory take turns (a lock file beside it) and publish a complete folder by renaming it,
        so concurrent jobs neither repeat the pass nor read half-written arrays (a killed builder leaves only its
        hidden staging folder).
        """
        if dtype not in CACHE_DTYPES:
            raise ConfigError(f"cache dtype {dtype!r}; expected one of {sorted(CACHE_DTYPES)}")
        if directory is None:
            return cls._from_arrays(*cls._encode(model, dataset, None, dtype, None, batch_size, num_workers, progress))
        key = cache_key(model, dataset, dtype)
        directory = Path(directory)
        with _exclusive(directory.with_name(directory.name + ".lock")):
            cached = cls._open(directory, key)
            if cached is not None:
                log.info("feature cache: reusing %s", directory)
                return cached
            staging = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                cls._encode(model, dataset, key, dtype, staging, batch_size, num_workers, progress)
                _replace(staging, directory)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return cls._open(directory, key)  # type: ignore[return-value]

    @classmethod
    def _encode(cls, model, dataset, key, dtype, directory, batch_size, num_workers, progress) -> tuple[dict, list]:
        """The arrays of one backbone pass (in memory, or `.npy` files under `directory` with `cache.json` last)."""
        categories = [r.category for r in dataset.records]
        torch_dtype = CACHE_DTYPES[dtype]
        n, size = len(dataset), dataset.image_transform.size
        arrays: dict[str, np.ndarray] | None = None
        loader = make_loader(dataset, batch_size, num_workers=num_workers)
        start = 0
        for batch in tqdm(loader, desc="feature cache", disable=not progress, unit="batch"):
            with device_autocast(model.device):
                features = model.encode_image(batch["image"].to(model.device))
            parts = {
                "global": features.global_embedding,
                **{f"layer{i}": t for i, t in enumerate(features.patch_tokens)},
            }
            parts = {k: v.to(torch_dtype).cpu().numpy() for k, v in parts.items()}
            if arrays is None:
                arrays = cls._allocate(parts, n, size, directory)
            stop = start + len(batch["label"])
            for name, value in parts.items():
                arrays[name][start:stop] = value
            arrays["masks"][start:stop] = batch["mask"][:, 0].numpy() > 0.5
            arrays["labels"][start:stop] = batch["label"].numpy()
            start = stop
        assert arrays is not None
        if directory is not None:
            for value in arrays.values():
                if isinstance(value, np.memmap):
                    value.flush()
            meta = {"key": key, "n": n, "layers": len(parts) - 1, "categories": categories}
            (Path(directory) / "cache.json").write_text(json.dumps(meta))
        return arrays, categories

    @staticmethod
    def _allocate(parts: dict[str, np.ndarray], n: int, size: int, directory: str | Path | None) -> dict:
        shapes = {k: (n, *v.shape[1:]) for k, v in parts.items()}
        shapes_and_types = {k: (s, parts[k].dtype) for k, s in shapes.items()}
        shapes_and_types["masks"] = ((n, size, size), np.dtype(bool))
        shapes_and_types["labels"] = ((n,), np.dtype(np.int64))
        if directory is None:
            return {k: np.empty(s, dtype=t) for k, (s, t) in shapes_and_types.items()}
        directory = Path(directory)
        directory.mkdir(parents=True)
        return {
            k: np.lib.format.open_memmap(directory / f"{k}.npy", mode="w+", dtype=t, shape=s)
            for k, (s, t) in shapes_and_types.items()
        }

    @classmethod
    def _open(cls, directory: Path, key: str) -> FeatureCache | None:
        meta = directory / "cache.json"
        if not meta.is_file():
            return None
        info = json.loads(meta.read_text())
        if info.get("key") != key:
            log.info("feature cache %s was made for other settings or images; rebuilding", directory)
            return None
        names = ["global", "masks", "labels", *[f"layer{i}" for i in range(info["layers"])]]
        arrays = {k: np.load(directory / f"{k}.npy", mmap_mode="r") for k in names}
        return cls._from_arrays(arrays, info["categories"])

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], categories: Sequence[str]) -> FeatureCache:
        layers = sorted((k for k in arrays if k.startswith("layer")), key=lambda k: int(k[5:]))
        return cls(arrays["global"], [arrays[k] for k in layers], arrays["masks"], arrays["labels"], categories)

    def batch(
        self, indices: Sequence[int], device: torch.device | str, dtype: torch.dtype = torch.float32
    ) -> FeatureBatch:
        """The cached rows `indices` as tensors on `device`, features cast to `dtype`."""
        index = np.asarray(indices)

        def take(array) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array[index])).to(device)

        features = VisualFeatures(
            global_embedding=take(self.global_embedding).to(dtype),
            patch_tokens=[take(t).to(dtype) for t in self.patch_tokens],
        )
        return FeatureBatch(features, take(self.masks).float(), take(self.labels), [self.categories[i] for i in index])


def device_autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU, nothing on a CPU (fp32 there matches the official numbers)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` for the block; the system releases it if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("feature cache: waiting for another process building %s", path.with_suffix(""))
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _replace(new: Path, old: Path) -> None:
    """Put the complete folder `new` where `old` is, by renames: whoever has the old arrays open keeps them."""
    if old.exists():
        retired = old.with_name(f".{old.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(old, retired)
        shutil.rmtree(retired, ignore_errors=True)
    os.rename(new, old)
