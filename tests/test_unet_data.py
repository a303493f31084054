import cv2
import numpy as np

from sharp_fpn.unet.data import load_dsb2018_semantic, resize_pair, synthetic_semantic_set


def write_dsb2018(root, n_images=3, size=40):
    """A tiny Dsb2018 stage folder: RGBA images, two 0/255 masks each."""
    for k in range(n_images):
        folder = root / f"img{k}"
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        image = np.full((size, size, 4), 255, np.uint8)
        image[..., :3] = 10 + 5 * k
        for m, (y, x) in enumerate([(4, 4), (20, 24)]):
            mask = np.zeros((size, size), np.uint8)
            mask[y : y + 8, x : x + 8] = 255
            image[mask > 0, :3] = 200
            cv2.imwrite(str(folder / "masks" / f"m{m}.png"), mask)
        cv2.imwrite(str(folder / "images" / f"img{k}.png"), image)


def test_reads_merges_resizes_and_caches(tmp_path):
    write_dsb2018(tmp_path / "stage1_train")
    data = load_dsb2018_semantic(tmp_path / "stage1_train", size=20, cache_dir=tmp_path / "cache")
    assert data.ids == ["img0", "img1", "img2"]
    assert data.images.shape == (3, 20, 20, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (3, 20, 20) and data.masks.sum(axis=(1, 2)).tolist() == [32, 32, 32]
    assert data.images[0, 3, 3].tolist() == [200, 200, 200]  # alpha dropped, nucleus bright
    (cached,) = (tmp_path / "cache").glob("*.npz")
    again = load_dsb2018_semantic(tmp_path / "stage1_train", size=20, cache_dir=tmp_path / "cache")
    assert again.ids == data.ids and np.array_equal(again.masks, data.masks)


def test_split_is_deterministic_and_disjoint():
    data = synthetic_semantic_set(10, 16)
    train, val = data.split(0.2, seed=3)
    assert len(train) == 8 and len(val) == 2 and not set(train.ids) & set(val.ids)
    assert data.split(0.2, seed=3)[1].ids == val.ids
    assert np.array_equal(val.masks, data.subset(val.ids).masks)


def test_resizing_keeps_small_nuclei_where_they_are():
    image = np.zeros((384, 384, 3), np.uint8)
    mask = np.zeros((384, 384), np.uint8)
    mask[100:108, 200:208] = 1  # 8x8 px -> 2x2 px at a quarter of the size
    _, small = resize_pair(image, mask, 96)
    assert small.sum() == 4 and small[25:27, 50:52].all()
