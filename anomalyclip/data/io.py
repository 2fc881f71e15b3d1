"""Read images and masks as they really come: TIFF, palette BMP, 16-bit, EXIF-rotated, lossy JPEG masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from anomalyclip.data.records import Box
from anomalyclip.errors import DataError

DEFAULT_MASK_THRESHOLD = 128
"""A mask pixel is anomalous when its 8-bit grey value is >= this (soft and JPEG edges split at half-grey)."""

OFFICIAL_MASK_THRESHOLD = 1
"""The official loader's rule, `value > 0`, as a threshold: any non-black pixel is anomalous."""

TIFF_SUFFIXES = (".tif", ".tiff")
_EXIF_ORIENTATION = 0x0112


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """Scale a 16-bit, 32-bit, float or boolean array to 0..255 uint8 by its type's range."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max(initial=0) > 255):
        return np.round(array.astype(np.float32) / 257.0).clip(0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array.clip(0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        return np.round(array * scale).clip(0, 255).astype(np.uint8)
    raise DataError(f"{path}: pixel type {array.dtype} is not supported; expected 8/16-bit integer or float")


def _from_array(array: np.ndarray, path: Path) -> Image.Image:
    """PIL image from a decoded (H, W), (H, W, 1|3|4) or (pages, H, W[, C]) array; the first page is kept."""
    if array.ndim >= 3 and array.shape[-1] not in (1, 3, 4):
        array = array[0]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: array of shape {array.shape} is not an image; expected HxW or HxWxC")
    return Image.fromarray(np.ascontiguousarray(_to_uint8(array, path)))


def _open(path: Path) -> Image.Image:
    """Decode the whole file (TIFF by tifffile), apply its EXIF orientation, return 8-bit L/RGB(A)."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return _from_array(tifffile.imread(path, key=0), path)
        image = Image.open(path)
        image.load()
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: unreadable or truncated image ({err}); expected a complete image file") from err
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _from_array(np.asarray(image), path)
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
    if image.mode == "1":
        return image.convert("L")
    return image


def _crop(image: Image.Image, crop: Box | None, path: Path) -> Image.Image:
    if crop is None:
        return image
    left, top, right, bottom = crop
    if right > image.width or bottom > image.height:
        raise DataError(f"{path}: crop {crop} falls outside the {image.width}x{image.height} image")
    return image.crop(crop)


def read_image(path: str | Path, crop: Box | None = None) -> Image.Image:
    """The decoded image in 8-bit L, RGB or RGBA (mode kept: the official code resizes before RGB)."""
    return _crop(_open(Path(path)), crop, Path(path))


def read_mask(path: str | Path, threshold: int = DEFAULT_MASK_THRESHOLD, crop: Box | None = None) -> Image.Image:
    """The mask binarised to an 'L' image of 0/255: grey value >= threshold is anomalous.

    A mask whose largest value is 1 (stored as 0/1) counts its 1s as anomalous whatever the threshold.
    """
    if not 1 <= threshold <= 255:
        raise DataError(f"mask threshold {threshold} is out of range; expected an integer in 1..255")
    grey = _open(Path(path))
    grey = grey if grey.mode == "L" else grey.convert("L")
    cut = 1 if grey.getextrema()[1] == 1 else threshold
    return _crop(grey.point([0] * cut + [255] * (256 - cut)), crop, Path(path))
