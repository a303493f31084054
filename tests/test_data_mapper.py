"""NucleiDatasetMapper: Detectron2's mapper with our reader, on RLE and polygon annotations."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import BitMasks, PolygonMasks

from sharp_fpn.data.coco_export import convert_dsb2018
from sharp_fpn.data.image_io import read_image
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
