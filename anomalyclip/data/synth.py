"""A small deterministic synthetic dataset in MVTec AD layout: the default data for smoke runs and tests.

Textures and simple objects are drawn with numpy; defects (scratches, spots, cracks) are drawn as binary masks
with Pillow and painted in intensities that clean images never take, so a mask is non-zero exactly where the
image changed. Each image has its own seed from (seed, category, split, index): same arguments, same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from anomalyclip.errors import DataError

SYNTH_FORMAT = 2
"""Bump when the drawing changes, so cached datasets made by older code are regenerated."""

MARKER_NAME = ".anomalyclip-synth.json"
TEXTURE_CATEGORIES = ("stripes", "weave")
OBJECT_CATEGORIES = ("disc", "square")
SYNTH_CATEGORIES: tuple[str, ...] = TEXTURE_CATEGORIES + OBJECT_CATEGORIES
DEFECT_TYPES: tuple[str, ...] = ("scratch", "spot", "crack")

CLEAN_RANGE = (70, 190)
"""Every channel of a clean image lies in this range; defects are painted at <= 40."""
DEFECT_RANGE = (5, 40)
"""Defects are dark, like real scratches, cracks and stains: one polarity keeps them separable for a linear probe
on the random `tiny` CLIP, which the learning tests rely on."""
MIN_DEFECT_PIXELS = 40

README_TEXT = """Synthetic anomaly-detection data made by `anomalyclip data synth` (anomalyclip.data.synth).

It is NOT real data: textures ({textures}) and simple objects ({objects}) drawn with numpy, with defects
({defects}) painted in intensities that clean images never take. Layout as MVTec AD:
<category>/train/good/NNN.png, <category>/test/good/NNN.png, <category>/test/<defect>/NNN.png and
<category>/ground_truth/<defect>/NNN_mask.png (0/255, exactly the changed pixels).
Arguments: {arguments}
"""


def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    """A generator seeded by `seed` and stable labels: an image does not depend on how many are made."""
    words = [seed] + [zlib.crc32(p.encode()) if isinstance(p, str) else p for p in parts]
    return np.random.default_rng(words)


def _finish(base: np.ndarray, tint: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Grey level map -> tinted RGB uint8 with sensor noise, clipped to the clean range."""
    rgb = base[..., None] * tint[None, None, :] + rng.normal(0.0, noise, base.shape + (3,))
    return np.clip(np.rint(rgb), *CLEAN_RANGE).astype(np.uint8)


def _stripes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Slightly tilted sinusoidal stripes with a random phase; the whole image is texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(-0.15, 0.15)
    period = size / rng.uniform(7.0, 9.0)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi))
    image = _finish(130.0 + 40.0 * wave, np.array([0.95, 1.0, 1.08]), rng, 5.0)
    return image, np.ones((size, size), dtype=bool)


def _weave(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Basket weave: alternating horizontal and vertical threads in a checkerboard of cells."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cell = size / 8.0
    offset = rng.uniform(0, cell, 2)
    checker = ((np.floor((yy + offset[0]) / cell) + np.floor((xx + offset[1]) / cell)) % 2).astype(bool)
    threads = np.where(checker, np.cos(np.pi * yy / (cell / 3)), np.cos(np.pi * xx / (cell / 3)))
    image = _finish(128.0 + 35.0 * threads, np.array([1.08, 1.0, 0.9]), rng, 6.0)
    return image, np.ones((size, size), dtype=bool)


def _object(rng: np.random.Generator, size: int, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc or square, jittered in place and size, on a darker smooth background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    radius = size * rng.uniform(0.3, 0.36)
    if shape == "disc":
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    else:
        inside = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
    background = 85.0 + 10.0 * (xx + yy) / (2 * size)
    shading = 165.0 - 15.0 * np.hypot(yy - cy, xx - cx) / radius
    image = _finish(np.where(inside, shading, background), np.array([1.0, 0.97, 0.93]), rng, 4.0)
    return image, inside


PAINTERS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]] = {
    "stripes": _stripes,
    "weave": _weave,
    "disc": lambda rng, size: _object(rng, size, "disc"),
    "square": lambda rng, size: _object(rng, size, "square"),
}


def _point_in(rng: np.random.Generator, region: np.ndarray) -> tuple[float, float]:
    """A random (x, y) pixel position inside `region`."""
    ys, xs = np.nonzero(region)
    k = int(rng.integers(len(ys)))
    return float(xs[k]), float(ys[k])


def _draw_defect(rng: np.random.Generator, kind: str, region: np.ndarray) -> np.ndarray:
    """Binary mask of one defect of `kind`, centred on a point of `region` (not yet clipped to it)."""
    size = region.shape[0]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    x, y = _point_in(rng, region)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        half = size * rng.uniform(0.12, 0.25)
        dx, dy = half * np.cos(angle), half * np.sin(angle)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=255, width=int(rng.integers(2, 4)))
    elif kind == "spot":
        rx, ry = size * rng.uniform(0.05, 0.1, 2)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=255)
    else:
        n_steps = int(rng.integers(8, 14))
        headings = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.6, n_steps))
        steps = size * rng.uniform(0.03, 0.06, n_steps)
        walk = np.cumsum(np.stack([steps * np.cos(headings), steps * np.sin(headings)], axis=1), axis=0)
        walk = np.vstack([np.zeros(2), walk])
        walk += np.array([x, y]) - (walk.min(axis=0) + walk.max(axis=0)) / 2
        draw.line([tuple(p) for p in walk], fill=255, width=int(rng.integers(2, 4)), joint="curve")
    return np.asarray(canvas) > 0


def _defect_mask(rng: np.random.Generator, kind: str, region: np.ndarray) -> np.ndarray:
    """A defect mask inside the object region with at least MIN_DEFECT_PIXELS pixels (redrawn until so)."""
    core = region.copy()
    margin = max(2, region.shape[0] // 16)
    core[:margin] = core[-margin:] = False
    core[:, :margin] = core[:, -margin:] = False
    while True:
        mask = _draw_defect(rng, kind, core) & region
        if mask.sum() >= MIN_DEFECT_PIXELS:
            return mask


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Paint the masked pixels dark, below the clean range, with a little noise and a random tint."""
    low, high = DEFECT_RANGE
    colour = rng.integers(low + 5, high - 5, 3)
    values = colour[None, :] + rng.integers(-5, 6, (int(mask.sum()), 3))
    out = image.copy()
    out[mask] = np.clip(values, low, high).astype(np.uint8)
    return out


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG with no metadata, so identical arrays give identical bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def _defect_plan(n_test_defect: int) -> list[tuple[str, int]]:
    """(defect type, index within its folder) for each anomalous test image, dealing types round-robin."""
    counts = dict.fromkeys(DEFECT_TYPES, 0)
    plan = []
    for i in range(n_test_defect):
        kind = DEFECT_TYPES[i % len(DEFECT_TYPES)]
        plan.append((kind, counts[kind]))
        counts[kind] += 1
    return plan


def _make_category(root: Path, category: str, counts: dict[str, int], image_size: int, seed: int) -> None:
    """Write one category: normal train and test images, anomalous test images and their masks."""
    paint = PAINTERS[category]
    for split in ("train", "test"):
        for i in range(counts[split]):
            image, _ = paint(_rng(seed, category, split, i), image_size)
            _save_png(image, root / category / split / "good" / f"{i:03d}.png")
    for i, (kind, j) in enumerate(_defect_plan(counts["defect"])):
        rng = _rng(seed, category, "defect", i)
        image, region = paint(rng, image_size)
        mask = _defect_mask(rng, kind, region)
        _save_png(_paint(rng, image, mask), root / category / "test" / kind / f"{j:03d}.png")
        _save_png(mask.astype(np.uint8) * 255, root / category / "ground_truth" / kind / f"{j:03d}_mask.png")


def _arguments(
    categories: Sequence[str], n_train: int, n_test_good: int, n_test_defect: int, image_size: int, seed: int
) -> dict[str, object]:
    """The arguments that determine the dataset's bytes, as recorded in its marker file."""
    return {
        "format": SYNTH_FORMAT,
        "categories": list(categories),
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_defect": n_test_defect,
        "image_size": image_size,
        "seed": seed,
    }


def _check_arguments(categories: Sequence[str], counts: Sequence[int], image_size: int) -> None:
    """Reject unknown categories, negative counts and images too small to draw on."""
    unknown = [c for c in categories if c not in PAINTERS]
    if unknown:
        raise DataError(f"unknown synthetic categories {unknown}; known: {list(SYNTH_CATEGORIES)}")
    if min(counts) < 0:
        raise DataError(f"image counts must be >= 0, got {list(counts)}")
    if image_size < 32:
        raise DataError(f"image_size must be >= 32 pixels, got {image_size}")


def make_synthetic_dataset(
    root: str | Path,
    *,
    categories: Sequence[str] | None = None,
    n_train: int = 8,
    n_test_good: int = 6,
    n_test_defect: int = 10,
    image_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write the synthetic dataset under `root` (MVTec layout, README.txt, a marker) and return `root`."""
    categories = tuple(SYNTH_CATEGORIES if categories is None else categories)
    _check_arguments(categories, (n_train, n_test_good, n_test_defect), image_size)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train": n_train, "test": n_test_good, "defect": n_test_defect}
    for category in categories:
        _make_category(root, category, counts, image_size, seed)
    arguments = _arguments(categories, n_train, n_test_good, n_test_defect, image_size, seed)
    (root / "README.txt").write_text(
        README_TEXT.format(
            textures=", ".join(TEXTURE_CATEGORIES),
            objects=", ".join(OBJECT_CATEGORIES),
            defects=", ".join(DEFECT_TYPES),
            arguments=json.dumps(arguments, sort_keys=True),
        )
    )
    (root / MARKER_NAME).write_text(json.dumps(arguments, sort_keys=True, indent=1) + "\n")
    return root


def default_synthetic_root() -> Path:
    """The embedded dataset's cache: $ANOMALYCLIP_DATA/synthetic, else ~/.cache/anomalyclip/synthetic."""
    base = os.environ.get("ANOMALYCLIP_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "anomalyclip") / "synthetic"


def _read_marker(root: Path) -> dict[str, object] | None:
    """The arguments recorded in `root`'s marker, or None when there is no readable marker."""
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def ensure_synthetic_dataset(root: str | Path | None = None, **kwargs: object) -> Path:
    """Return a synthetic dataset made with these arguments; generate it only when missing or made otherwise.

    The folder is built beside `root` and renamed into place, so a reader never sees half a dataset. A folder
    with files but no marker is not ours: it raises DataError instead of being overwritten.
    """
    root = Path(root) if root is not None else default_synthetic_root()
    categories = kwargs.pop("categories", None)
    wanted = {**make_synthetic_dataset.__kwdefaults__, **kwargs}
    wanted["categories"] = list(SYNTH_CATEGORIES if categories is None else categories)
    expected = _arguments(**wanted)
    found = _read_marker(root)
    if found == expected:
        return root
    if found is None and root.exists() and any(root.iterdir()):
        raise DataError(f"{root} has files but no {MARKER_NAME}: it is not a synthetic dataset, refusing to overwrite")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    make_synthetic_dataset(staging, **wanted)
    if root.exists():
        shutil.rmtree(root)
    try:
        staging.rename(root)
    except OSError:
        shutil.rmtree(staging)
        if _read_marker(root) != expected:
            raise
    return root
