"""Synthetic Dsb2018-like data: layout, file kinds, determinism, learnable contrast, speed."""
import time

import cv2
import numpy as np
import pytest

from sharp_fpn.data.image_io import load_image_array, read_image
from sharp_fpn.data.synthetic import IMAGE_STYLES, make_synthetic_dataset


def _masks(folder):
    return [cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted((folder / "masks").glob("*.png"))]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    ids = make_synthetic_dataset(root, num_images=8, size=(64, 80), max_size=(96, 112), seed=3)
    return root, ids


def test_layout_and_file_kinds(dataset):
    root, ids = dataset
    assert len(ids) == 8 and sorted(p.name for p in root.iterdir()) == sorted(ids)
    kinds = []
    for image_id in ids:
        (image_path,) = (root / image_id / "images").iterdir()
        assert image_path.stem == image_id
        array = load_image_array(image_path)
        kinds.append((image_path.suffix, array.dtype.name, array.shape[2] if array.ndim == 3 else 1))
        assert 64 <= array.shape[0] <= 96 and 80 <= array.shape[1] <= 112
        masks = _masks(root / image_id)
        assert len(masks) >= 3
        for mask in masks:
            assert mask.shape == array.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}
    # Grey as RGBA (Kaggle's usual), H&E-like colour, 16-bit PNG and 16-bit TIFF.
    assert set(kinds) == {(".png", "uint8", 4), (".png", "uint8", 3), (".png", "uint16", 1), (".tif", "uint16", 1)}


def test_rgba_is_grey_with_opaque_alpha(dataset):
    root, ids = dataset
    rgba = load_image_array(root / ids[0] / "images" / f"{ids[0]}.png")
    assert (rgba[..., 3] == 255).all()
    assert (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all()


def test_nuclei_stand_out(dataset):
    """Learnable in a CPU demo: nuclei clearly brighter (fluorescence) or darker (H&E)."""
    root, ids = dataset
    for index, image_id in enumerate(ids):
        (image_path,) = (root / image_id / "images").iterdir()
        grey = read_image(image_path).astype(float).mean(axis=2)
        foreground = np.any([m > 0 for m in _masks(root / image_id)], axis=0)
        contrast = grey[foreground].mean() - grey[~foreground].mean()
        if IMAGE_STYLES[index % len(IMAGE_STYLES)] == "colour_he":
            contrast = -contrast
        assert contrast > 60, image_id


def test_sizes_and_touching(dataset):
    root, ids = dataset
    diameters, touching = [], 0
    for image_id in ids:
        masks = [m > 0 for m in _masks(root / image_id)]
        for mask in masks:
            ys, xs = np.nonzero(mask)
            diameters.append(max(np.ptp(ys), np.ptp(xs)) + 1)
        grown = [cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in masks]
        touching += sum((grown[i] & masks[j]).any() for i in range(len(masks)) for j in range(i + 1, len(masks)))
    assert 4 <= min(diameters) and max(diameters) <= 32
    assert touching > len(ids)  # clusters, not isolated blobs


def test_deterministic_by_seed(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", num_images=2, size=(48, 48), seed=5)
    again = make_synthetic_dataset(tmp_path / "b", num_images=2, size=(48, 48), seed=5)
    other = make_synthetic_dataset(tmp_path / "c", num_images=2, size=(48, 48), seed=6)
    assert first == again
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    image = load_image_array(tmp_path / "a" / first[0] / "images" / f"{first[0]}.png")
    assert not np.array_equal(image, load_image_array(tmp_path / "c" / other[0] / "images" / f"{other[0]}.png"))


def test_no_overlap_when_asked(tmp_path):
    ids = make_synthetic_dataset(tmp_path, num_images=3, size=(96, 96), seed=1, overlap_probability=0.0)
    for image_id in ids:
        coverage = np.sum([m > 0 for m in _masks(tmp_path / image_id)], axis=0)
        assert coverage.max() == 1


def test_styles_argument_and_square_size(tmp_path):
    ids = make_synthetic_dataset(tmp_path, num_images=2, size=32, styles=("grey16_tif",))
    assert load_image_array(tmp_path / ids[0] / "images" / f"{ids[0]}.tif").shape == (32, 32)
    assert all((tmp_path / i / "images" / f"{i}.tif").is_file() for i in ids)
    with pytest.raises(ValueError, match="styles"):
        make_synthetic_dataset(tmp_path, num_images=1, styles=("jpeg",))


def test_fast_enough_for_demos(tmp_path):
    started = time.perf_counter()
    make_synthetic_dataset(tmp_path, num_images=16, size=(128, 128), max_size=(256, 256))
    assert time.perf_counter() - started < 6.0  # about 0.7 s on a free core; 2 shared cores here
