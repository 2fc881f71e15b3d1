"""Images and masks as they really come: TIFF, palette BMP, JPEG masks, 0/1 masks, 16-bit, EXIF, mixed sizes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from anomalyclip.data import OFFICIAL_MASK_THRESHOLD, Record, load_pair, read_image, read_mask
from anomalyclip.errors import DataError


def soft_mask() -> np.ndarray:
    """A 20x30 mask: core 255, a soft ring of 100 around it, the rest 0."""
    array = np.zeros((20, 30), np.uint8)
    array[4:16, 4:16] = 100
    array[6:14, 6:14] = 255
    return array


def test_tiff_rgb_and_mask(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "1.tif", rgb)
    tifffile.imwrite(tmp_path / "m.tif", soft_mask())
    image = read_image(tmp_path / "1.tif")
    assert image.mode == "RGB" and image.size == (30, 20)
    np.testing.assert_array_equal(np.asarray(image), rgb)
    assert np.asarray(read_mask(tmp_path / "m.tif")).astype(bool).sum() == 64


def test_threshold_default_vs_official(tmp_path):
    Image.fromarray(soft_mask()).save(tmp_path / "m.png")
    assert (np.asarray(read_mask(tmp_path / "m.png")) > 0).sum() == 64
    assert (np.asarray(read_mask(tmp_path / "m.png", OFFICIAL_MASK_THRESHOLD)) > 0).sum() == 144
    assert (np.asarray(read_mask(tmp_path / "m.png", 50)) > 0).sum() == 144
    with pytest.raises(DataError, match="mask threshold 0 is out of range"):
        read_mask(tmp_path / "m.png", 0)


def test_lossy_jpeg_rgb_mask(tmp_path):
    array = np.repeat(soft_mask()[..., None], 3, axis=2)
    array[array == 100] = 0
    Image.fromarray(array).save(tmp_path / "m.jpg", quality=50)
    noisy = np.asarray(Image.open(tmp_path / "m.jpg").convert("L"))
    mask = np.asarray(read_mask(tmp_path / "m.jpg")) > 0
    assert (noisy > 0).sum() > mask.sum() and abs(int(mask.sum()) - 64) <= 8
    assert set(np.unique(np.asarray(read_mask(tmp_path / "m.jpg")))) <= {0, 255}


def test_zero_one_mask_counts_ones(tmp_path):
    Image.fromarray((soft_mask() == 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert (np.asarray(read_mask(tmp_path / "m.png")) > 0).sum() == 64


def test_palette_bmp_mask(tmp_path):
    palette = Image.fromarray((soft_mask() == 255).astype(np.uint8)).convert("P")
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.save(tmp_path / "m.bmp")
    assert Image.open(tmp_path / "m.bmp").mode == "P"
    assert (np.asarray(read_mask(tmp_path / "m.bmp")) > 0).sum() == 64


def test_sixteen_bit_grayscale(tmp_path):
    array = np.full((20, 30), 65535, np.uint16)
    array[:, :15] = 257 * 10
    Image.fromarray(array).save(tmp_path / "g16.png")
    tifffile.imwrite(tmp_path / "g16.tif", array)
    for name in ("g16.png", "g16.tif"):
        image = read_image(tmp_path / name)
        assert image.mode == "L" and np.asarray(image)[0, 0] == 10 and np.asarray(image)[0, -1] == 255


def test_grayscale_stays_grayscale_until_transform(tmp_path):
    Image.new("L", (30, 20), 7).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").mode == "L"


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 30, 3), np.uint8)
    array[:5, :, 0] = 255  # red top band
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    upright = read_image(tmp_path / "r.jpg")
    assert upright.size == (20, 30)
    red = np.asarray(upright)[..., 0]
    assert red[:, -1].mean() > 200 and red[:, 0].mean() < 50  # the top band is now on the right


def test_mixed_sizes_and_zero_mask_of_own_size(tmp_path):
    for i, size in enumerate([(30, 20), (17, 41)]):
        Image.new("RGB", size).save(tmp_path / f"{i}.png")
        image, mask = load_pair(Record(tmp_path / f"{i}.png", None, "c", "good", 0, "test"))
        assert mask.size == image.size == size and mask.mode == "L" and not np.asarray(mask).any()


def test_mask_size_mismatch_is_an_error(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "i.png")
    Image.fromarray(soft_mask()[:10]).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=r"m\.png: mask is 30x10 but image .*i\.png is 30x20"):
        load_pair(Record(tmp_path / "i.png", tmp_path / "m.png", "c", "cut", 1, "test"))


def test_truncated_and_garbage_files(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:300])
    (tmp_path / "junk.png").write_bytes(b"not an image")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    for name in ("cut.jpg", "junk.png", "junk.tif"):
        with pytest.raises(DataError, match=rf"{name}: unreadable or truncated image"):
            read_image(tmp_path / name)
