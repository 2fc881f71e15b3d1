"""A feature cache: the frozen backbone's outputs for each training image, computed once and reused every epoch.

The backbone is frozen and the official recipe has no augmentation, so an image's global embedding and patch tokens
are the same in every epoch; only the cheap text side changes. Kept in memory or in `.npy` memory maps on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
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
        """One backbone pass over `dataset`; with `directory`, memory-mapped `.npy` files reused when the key fits."""
        if dtype not in CACHE_DTYPES:
            raise ConfigError(f"cache dtype {dtype!r}; expected one of {sorted(CACHE_DTYPES)}")
        key = cache_key(model, dataset, dtype) if directory is not None else None
        if directory is not None:
            cached = cls._open(Path(directory), key)
            if cached is not None:
                log.info("feature cache: reusing %s", directory)
                return cached
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
        return cls._from_arrays(arrays, categories)

    @staticmethod
    def _allocate(parts: dict[str, np.ndarray], n: int, size: int, directory: str | Path | None) -> dict:
        shapes = {k: (n, *v.shape[1:]) for k, v in parts.items()}
        shapes_and_types = {k: (s, parts[k].dtype) for k, s in shapes.items()}
        shapes_and_types["masks"] = ((n, size, size), np.dtype(bool))
        shapes_and_types["labels"] = ((n,), np.dtype(np.int64))
        if directory is None:
            return {k: np.empty(s, dtype=t) for k, (s, t) in shapes_and_types.items()}
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cache.json").unlink(missing_ok=True)
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
