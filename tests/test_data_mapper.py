"""NucleiDatasetMapper: Detectron2's mapper with our reader, on RLE and polygon annotations."""
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, PolygonMasks

from sharp_fpn.data.coco_export import convert_dsb2018
from sharp_fpn.data.image_io import read_image
from sharp_fpn.data.kinds import needs_inversion
from sharp_fpn.data.mapper import NucleiDatasetMapper
from sharp_fpn.data.register import register_coco_nuclei
from sharp_fpn.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mapper")
    make_synthetic_dataset(root / "stage", num_images=4, size=(48, 64), overlap_probability=0.0)
    convert_dsb2018(root / "stage", root / "rle", val_fraction=0.0, workers=1)
    convert_dsb2018(root / "stage", root / "polygons", val_fraction=0.0, polygons=True, workers=1)
    register_coco_nuclei("test_mapper_rle", root / "rle" / "train.json", root / "stage")
    register_coco_nuclei("test_mapper_polygons", root / "polygons" / "train.json", root / "stage")
    return DatasetCatalog.get("test_mapper_rle"), DatasetCatalog.get("test_mapper_polygons")


def _cfg(mask_format="bitmask"):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = mask_format
    cfg.INPUT.MIN_SIZE_TRAIN = (48,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.RANDOM_FLIP = "none"
    return cfg


def test_training_with_rle_bitmasks(datasets):
    mapper = NucleiDatasetMapper(_cfg("bitmask"), is_train=True)
    for record in datasets[0]:  # every file kind: RGBA, colour, 16-bit PNG and TIFF
        mapped = mapper(record)
        image = mapped["image"]
        assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
        # Unchanged size and no flip: exactly what our reader gives (16-bit not saturated).
        expected = read_image(record["file_name"], format="BGR")
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)
        assert len(np.unique(expected)) > 20
        instances = mapped["instances"]
        assert isinstance(instances.gt_masks, BitMasks)
        assert len(instances) == len(record["annotations"])
        areas = instances.gt_masks.tensor.sum(dim=(1, 2)).tolist()
        assert areas == [mask_util.area(a["segmentation"]) for a in record["annotations"]]


def test_training_with_polygons(datasets):
    mapped = NucleiDatasetMapper(_cfg("polygon"), is_train=True)(datasets[1][0])
    assert isinstance(mapped["instances"].gt_masks, PolygonMasks)
    assert len(mapped["instances"]) == len(datasets[1][0]["annotations"])


def test_rle_with_polygon_format_says_what_to_do(datasets):
    with pytest.raises(ValueError, match="MASK_FORMAT"):
        NucleiDatasetMapper(_cfg("polygon"), is_train=True)(datasets[0][0])


def test_inference_drops_annotations(datasets):
    mapped = NucleiDatasetMapper(_cfg(), is_train=False)(datasets[0][2])
    assert "annotations" not in mapped and "instances" not in mapped
    assert mapped["image"].shape[0] == 3


def test_does_not_modify_the_dataset_dict(datasets):
    record = datasets[0][1]
    before = repr(record)
    NucleiDatasetMapper(_cfg(), is_train=True)(record)
    assert repr(record) == before


def _inverted_copy(record: dict, folder) -> dict:
    """The record with its image inverted (255 - value) and saved as an 8-bit RGB PNG."""
    path = folder / f"inverted_{record['image_id']}.png"
    cv2.imwrite(str(path), 255 - read_image(record["file_name"], format="BGR"))
    return {**record, "file_name": str(path)}


def test_bright_nuclei_inverts_bright_images_as_read(datasets, tmp_path):
    records = datasets[0]
    grey, colour = records[0], records[1]  # grey RGBA fluorescence, H&E-like colour
    cfg = _cfg("bitmask")
    cfg.INPUT.BRIGHT_NUCLEI = "grey"
    mapper = NucleiDatasetMapper(cfg, is_train=True)
    assert mapper.bright_nuclei == "grey"
    dark, bright = mapper(grey), mapper(_inverted_copy(grey, tmp_path))
    # The bright copy reaches the model inverted back, bit for bit; its masks are untouched.
    expected = 255 - read_image(_inverted_copy(grey, tmp_path)["file_name"], format="BGR")
    np.testing.assert_array_equal(bright["image"].permute(1, 2, 0).numpy(), expected)
    np.testing.assert_array_equal(dark["image"].permute(1, 2, 0).numpy(), read_image(grey["file_name"], format="BGR"))
    assert torch.equal(bright["instances"].gt_masks.tensor, dark["instances"].gt_masks.tensor)
    # Colour is left alone by "grey" and inverted by "all" (its pink background is bright).
    as_read = read_image(colour["file_name"], format="BGR")
    np.testing.assert_array_equal(mapper(colour)["image"].permute(1, 2, 0).numpy(), as_read)
    cfg.INPUT.BRIGHT_NUCLEI = "all"
    np.testing.assert_array_equal(NucleiDatasetMapper(cfg, is_train=True)(colour)["image"].permute(1, 2, 0).numpy(),
                                  255 - as_read)


def test_bright_nuclei_decides_on_the_whole_image_not_the_crop(tmp_path):
    # Grey, 48x96: a dark left third with bright nuclei, a bright rest with dark nuclei. The
    # whole image is brightfield (median bright); a crop of the left third alone is not.
    rng = np.random.default_rng(0)
    image = np.where(np.arange(96) < 32, 40, 200).astype(np.uint8)[None].repeat(48, axis=0)
    image = np.clip(image + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)
    image[10:18, 8:16], image[30:38, 60:68] = 230, 20
    dark = 255 - image  # fluorescence, but its crop of the left third alone is bright
    for name, pixels in (("bright", image), ("dark", dark)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), pixels)
    left_third = T.CropTransform(0, 0, 32, 48)  # x0, y0, width, height

    def crop(name: str, mode: str) -> np.ndarray:
        mapper = NucleiDatasetMapper(False, augmentations=[left_third], image_format="RGB", bright_nuclei=mode)
        record = {"file_name": str(tmp_path / f"{name}.png"), "height": 48, "width": 96, "image_id": name}
        return mapper(record)["image"].permute(1, 2, 0).numpy()[..., 0]

    assert needs_inversion(image, "grey") and not needs_inversion(image[:, :32], "grey")
    np.testing.assert_array_equal(crop("bright", "grey"), 255 - image[:, :32])
    np.testing.assert_array_equal(crop("bright", ""), image[:, :32])
    assert not needs_inversion(dark, "grey") and needs_inversion(dark[:, :32], "grey")
    np.testing.assert_array_equal(crop("dark", "grey"), dark[:, :32])
