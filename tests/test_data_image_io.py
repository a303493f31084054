"""The shared image reader: every kind of file reaches the model as HxWx3 uint8."""
import cv2
import numpy as np
import pytest
import tifffile

from sharp_fpn.data.image_io import load_image_array, read_image, to_rgb_uint8


def _ramp16(height=20, width=30):
    """16-bit ramp from 1000 to about 4000 with one hot pixel, like a 12-bit camera."""
    image = (1000 + np.arange(height * width).reshape(height, width) * 5).astype(np.uint16)
    image[0, 0] = 65535
    return image


def test_grey_png_is_replicated(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (10, 12), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    image = read_image(tmp_path / "g.png")
    assert image.shape == (10, 12, 3) and image.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], grey)


def test_rgba_drops_alpha_and_keeps_colour_order(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 255
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    assert read_image(tmp_path / "c.png", format="RGB")[0, 0].tolist() == [10, 20, 30]
    assert read_image(tmp_path / "c.png", format="BGR")[0, 0].tolist() == [30, 20, 10]
    assert read_image(tmp_path / "c.png", format="L").shape == (4, 5, 1)


def test_uint8_passes_through_unless_asked(tmp_path):
    grey = np.full((6, 6), 100, dtype=np.uint8)
    grey[0, :3] = 50
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png")[..., 0], grey)
    stretched = read_image(tmp_path / "g.png", normalize_uint8=True, percentiles=(0, 100))[..., 0]
    assert stretched.min() == 0 and stretched.max() == 255


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_is_percentile_normalised_not_saturated(tmp_path, suffix):
    ramp = _ramp16()
    path = tmp_path / f"r{suffix}"
    cv2.imwrite(str(path), ramp) if suffix == ".png" else tifffile.imwrite(path, ramp)
    assert load_image_array(path).dtype == np.uint16
    image = read_image(path)
    assert image.dtype == np.uint8
    assert image.min() == 0 and image.max() == 255
    # Detectron2's PIL reader would give 255 everywhere; ours keeps the ramp's order.
    assert len(np.unique(image)) > 200
    assert image[10, 15, 0] > image[5, 5, 0]


def test_16bit_rgb_tiff_channels_first(tmp_path):
    rgb = np.stack([_ramp16(), _ramp16() // 2, _ramp16() // 4])  # 3 x H x W
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", planarconfig="separate")
    image = read_image(tmp_path / "c.tif", format="RGB")
    assert image.shape == (20, 30, 3)
    assert image[10, 15, 0] > image[10, 15, 1] > image[10, 15, 2]  # colour balance kept


def test_lzw_tiff_needs_and_uses_imagecodecs(tmp_path):
    pytest.importorskip("imagecodecs")
    tifffile.imwrite(tmp_path / "l.tif", _ramp16(), compression="lzw")
    assert read_image(tmp_path / "l.tif").shape == (20, 30, 3)


def test_constant_and_float_images():
    assert to_rgb_uint8(np.full((3, 3), 7, dtype=np.uint16)).max() == 0
    image = to_rgb_uint8(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10), percentiles=(0, 100))
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255


def test_grey_with_alpha_array():
    grey_alpha = np.dstack([np.full((2, 2), 9, np.uint8), np.full((2, 2), 255, np.uint8)])
    assert to_rgb_uint8(grey_alpha).tolist() == [[[9, 9, 9]] * 2] * 2


def test_corrupt_and_missing_files(tmp_path, capfd):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(OSError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    assert capfd.readouterr().err == ""  # no OpenCV chatter besides our error
    with pytest.raises(FileNotFoundError, match="gone.png"):
        read_image(tmp_path / "gone.png")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((6, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="stack.tif"):
        read_image(tmp_path / "stack.tif")


def test_unknown_format(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="YUV"):
        read_image(tmp_path / "g.png", format="YUV")


def test_empty_file_is_an_oserror_naming_it(tmp_path):
    import pytest

    from sharp_fpn.data.image_io import load_image_array

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(OSError, match="empty.png: empty file"):
        load_image_array(empty)
