"""The nuclei input pipeline: one scale rule for every path, crops, symmetries and intensity."""
import numpy as np
import pytest
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from sharp_fpn import get_sharp_cfg
from sharp_fpn.data.augment import (RandomIntensity, RandomScaledCrop, TransposeTransform,
                                    build_nuclei_augmentations, hed_jitter, scaled_shape, inference_scale)
from sharp_fpn.data.image_io import read_image
from sharp_fpn.data.mapper import NucleiDatasetMapper


def _cfg(*opts):
    return get_sharp_cfg("mask_rcnn_sharp_R50", ["MODEL.DEVICE", "cpu", *opts])


def test_shortest_edge_rule_is_detectron2s_and_shrinks_large_images():
    cfg = _cfg("INPUT.MIN_SIZE_TEST", "640", "INPUT.MAX_SIZE_TEST", "1333")
    assert inference_scale(cfg, 256, 320) == pytest.approx(2.5)
    assert inference_scale(cfg, 256, 1000) == pytest.approx(1.333)  # long edge capped
    assert inference_scale(cfg, 1024, 1024) == pytest.approx(0.625)  # as training saw it
    for height, width in ((256, 320), (256, 1000), (1024, 1024), (517, 701)):
        resize = T.ResizeShortestEdge(640, 1333).get_transform(np.zeros((height, width, 3), np.uint8))
        assert scaled_shape(height, width, inference_scale(cfg, height, width)) == (resize.new_h, resize.new_w)


def test_scale_rule_keeps_file_pixels_times_a_factor():
    cfg = _cfg("INPUT.RESIZE", "scale", "INPUT.SCALE_TEST", "2.0")
    assert inference_scale(cfg, 1024, 1024) == inference_scale(cfg, 256, 320) == 2.0
    (aug,) = build_nuclei_augmentations(cfg, is_train=False)
    image = np.zeros((130, 77, 3), np.uint8)
    assert aug.get_transform(image).apply_image(image).shape == (260, 154, 3)


def test_bad_resize_rule_is_named():
    with pytest.raises(ValueError, match="INPUT.RESIZE = 'zoom' is not valid"):
        _cfg("INPUT.RESIZE", "zoom")


def test_scaled_crop_cuts_then_resizes_to_the_crop_size():
    np.random.seed(0)
    image = np.random.randint(0, 255, (1000, 900, 3), np.uint8)
    transform = RandomScaledCrop(2.0, 2.0, (256, 256)).get_transform(image)
    crop, resize = transform.transforms
    assert (crop.h, crop.w) == (128, 128) and (resize.new_h, resize.new_w) == (256, 256)
    out = transform.apply_image(image)
    assert out.shape == (256, 256, 3)
    window = image[crop.y0 : crop.y0 + 128, crop.x0 : crop.x0 + 128]
    assert np.abs(out[::2, ::2].astype(int) - window.astype(int)).mean() < 40  # same content
    small = RandomScaledCrop(2.0, 2.0, (256, 256)).get_transform(np.zeros((60, 100, 3), np.uint8))
    assert small.apply_image(np.zeros((60, 100, 3), np.uint8)).shape == (120, 200, 3)  # kept whole


def test_transpose_moves_masks_and_boxes_together():
    mask = np.zeros((40, 60), np.uint8)
    mask[5:12, 30:50] = 1  # 7 rows x 20 columns
    transform = TransposeTransform()
    moved = transform.apply_segmentation(mask)
    assert moved.shape == (60, 40) and moved[30:50, 5:12].all() and moved.sum() == mask.sum()
    box = transform.apply_box(np.array([[30, 5, 50, 12]], float))
    assert box.tolist() == [[5, 30, 12, 50]]
    assert np.array_equal(transform.inverse().apply_segmentation(moved), mask)


def test_intensity_keeps_uint8_and_can_invert_and_drop_colour():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    identity = RandomIntensity((1, 1), (1, 1), (1, 1), grey_prob=0.0, invert_prob=0.0)
    assert np.array_equal(identity.get_transform(image).apply_image(image), image)
    inverted = RandomIntensity((1, 1), (1, 1), (1, 1), grey_prob=0.0, invert_prob=1.0)
    out = inverted.get_transform(image).apply_image(image)
    assert out.dtype == np.uint8 and np.array_equal(out, 255 - image)
    grey = RandomIntensity((1, 1), (1, 1), (1, 1), grey_prob=1.0, invert_prob=0.0)
    out = grey.get_transform(image).apply_image(image)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.fixture(scope="module")
def synthetic_rgb(tmp_path_factory):
    """The synthetic set's grey (fluorescence) and H&E-like colour images, as uint8 RGB."""
    from sharp_fpn.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("augment_images")
    ids = make_synthetic_dataset(root, num_images=2, size=(64, 80))
    return [read_image(next((root / i / "images").iterdir()), format="RGB") for i in ids]


def _hed(s: float, prob: float = 1.0, image_format: str = "RGB") -> RandomIntensity:
    """HED jitter alone: brightness, contrast and gamma fixed at 1, no grey or inverted crops."""
    return RandomIntensity((1, 1), (1, 1), (1, 1), 0.0, 0.0, hed_jitter=s, hed_prob=prob, image_format=image_format)


def _apply(augmentation, image, seed: int):
    np.random.seed(seed)
    return augmentation.get_transform(image).apply_image(image)


def test_hed_round_trip_keeps_stain_colours_not_greys(synthetic_rgb):
    _, colour = synthetic_rgb
    # Measured: rgb2hed/hed2rgb give the synthetic H&E image back exactly (its colours are
    # mixtures of the stains), so unjittered it is unchanged; greys are not stain mixtures.
    assert np.array_equal(hed_jitter(colour, (1, 1, 1), (0, 0, 0)), colour)
    grey = np.full((4, 4, 3), 100, np.uint8)
    assert hed_jitter(grey, (1, 1, 1), (0, 0, 0))[0, 0].tolist() == [98, 72, 96]
    assert hed_jitter(np.full((4, 4, 3), 250, np.uint8), (1, 1, 1), (0, 0, 0))[0, 0].tolist() == [250, 248, 250]
    assert np.array_equal(_apply(_hed(0.0), colour, 0), colour)  # s = 0: off


def test_hed_jitter_changes_colour_crops_only(synthetic_rgb):
    grey, colour = synthetic_rgb
    assert np.array_equal(_apply(_hed(0.2), grey, 0), grey)
    out = _apply(_hed(0.2), colour, 0)
    change = np.abs(out.astype(int) - colour.astype(int))
    assert out.dtype == np.uint8 and out.shape == colour.shape
    assert 1 < change.mean() < 40  # the stains vary, the image stays an H&E image
    assert np.array_equal(_apply(_hed(0.2), colour, 0), out)  # same seed, same crop
    assert not np.array_equal(_apply(_hed(0.2), colour, 1), out)
    assert np.array_equal(_apply(_hed(0.2, prob=0.0), colour, 0), colour)
    # In Detectron2's BGR order the same stains change.
    bgr = np.ascontiguousarray(colour[..., ::-1])
    assert np.array_equal(_apply(_hed(0.2, image_format="BGR"), bgr, 0), out[..., ::-1])


def test_hed_keys_reach_the_pipeline_and_are_off_by_default(synthetic_rgb):
    _, colour = synthetic_rgb
    cfg = _cfg("INPUT.INTENSITY.ENABLED", "True", "INPUT.FORMAT", "BGR")
    default = build_nuclei_augmentations(cfg, is_train=True)[-1]
    assert (default.hed_jitter, default.hed_prob, default.image_format) == (0.0, 0.5, "BGR")
    old = RandomIntensity(default.brightness, default.contrast, default.gamma, 0.0, 0.0)
    assert np.array_equal(_apply(default, colour, 3), _apply(old, colour, 3))  # as before the keys
    on = build_nuclei_augmentations(_cfg("INPUT.INTENSITY.ENABLED", "True", "INPUT.INTENSITY.HED_JITTER", "0.1",
                                         "INPUT.INTENSITY.HED_PROB", "1.0"), is_train=True)[-1]
    assert (on.hed_jitter, on.hed_prob) == (0.1, 1.0)
    assert not np.array_equal(_apply(on, colour, 3), _apply(default, colour, 3))


def test_bright_nuclei_key_is_checked():
    assert _cfg().INPUT.BRIGHT_NUCLEI == ""
    assert _cfg("INPUT.BRIGHT_NUCLEI", "all").INPUT.BRIGHT_NUCLEI == "all"
    with pytest.raises(ValueError, match=r"INPUT.BRIGHT_NUCLEI = 'brightfield' is not valid; choose one of \('', 'grey', 'all'\)"):
        _cfg("INPUT.BRIGHT_NUCLEI", "brightfield")


def test_recipe_mapper_gives_crops_with_consistent_instances(tmp_path):
    """The shipped recipe's training mapper on a real converted dataset: each sample is a crop
    of the crop size (or the whole scaled image), and every kept box encloses its mask."""
    from detectron2.data import DatasetCatalog

    from sharp_fpn.data.coco_export import convert_dsb2018
    from sharp_fpn.data.register import register_coco_nuclei
    from sharp_fpn.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "stage", num_images=3, size=(160, 200), overlap_probability=0.0)
    convert_dsb2018(tmp_path / "stage", tmp_path / "ann", val_fraction=0.0, workers=1)
    register_coco_nuclei("test_augment_recipe", tmp_path / "ann" / "train.json", tmp_path / "stage")
    cfg = get_sharp_cfg("nuclei_R18_cpu.yaml", ["MODEL.DEVICE", "cpu", "INPUT.CROP.SIZE", "[96, 96]"])
    mapper = NucleiDatasetMapper(cfg, is_train=True)
    np.random.seed(1)
    for record in DatasetCatalog.get("test_augment_recipe") * 3:
        mapped = mapper(record)
        assert tuple(mapped["image"].shape) == (3, 96, 96)
        instances = mapped["instances"]
        masks = instances.gt_masks.tensor.numpy()
        for mask, box in zip(masks, instances.gt_boxes.tensor.numpy()):
            rows, cols = np.nonzero(mask)
            if rows.size:
                assert box[0] <= cols.min() + 1 and cols.max() <= box[2] + 1
                assert box[1] <= rows.min() + 1 and rows.max() <= box[3] + 1
    assert BoxMode.XYWH_ABS  # the converter's boxes are XYWH; the mapper made them XYXY above
