"""NucleiPredictor on synthetic Dsb2018-like files, with a tiny random-init Mask R-CNN.

The tiny model's mask head is set to predict "everything inside the box" (weights 0, bias +4),
so its objects are the boxes it finds: arbitrary places, but solid masks whose outputs we can
reason about. Also home of the helpers the other test_predict_* modules share.
"""
import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import tiny_overrides
from detectron2.modeling import build_model

from sharp_fpn import get_sharp_cfg
from sharp_fpn.checkpoint import SharpCheckpointer
from sharp_fpn.data.image_io import load_image_array
from sharp_fpn.data.synthetic import make_synthetic_dataset
from sharp_fpn.predict import NucleiPredictor, SetupError
from sharp_fpn.predict.predictor import grey_intensity

# ResNet-18 and narrow heads: a real Mask R-CNN that runs a 128 px image in well under a second.
TINY_MODEL = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SHARP_FPN.BRANCH_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_MASK_HEAD.NUM_CONV", "1",
    "TEST.DETECTIONS_PER_IMAGE", "30",
]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These models are tiny and the cores shared: on a loaded 2-core machine two torch threads
    ran a ResNet-18 step 30x slower than one (OpenMP threads spinning for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scratch_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.lru_cache(maxsize=None)
def tiny_checkpoint() -> Path:
    """A folder with ``model_final.pth`` and ``config.yaml`` of the tiny model, as training
    leaves them; made once per test session."""
    folder = _scratch_dir("sharp_fpn_predict_model_")
    cfg = get_sharp_cfg("mask_rcnn_sharp_R50", tiny_overrides(64) + TINY_MODEL)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.mask_head.predictor.weight.zero_()
        model.roi_heads.mask_head.predictor.bias.fill_(4.0)
    SharpCheckpointer(model, save_dir=str(folder)).save("model_final")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder


@functools.lru_cache(maxsize=None)
def synthetic_images() -> list:
    """Four 96x128 images, one of each kind: grey RGBA PNG, colour PNG, 16-bit PNG, 16-bit TIFF."""
    root = _scratch_dir("sharp_fpn_predict_images_")
    ids = make_synthetic_dataset(root, num_images=4, size=(96, 128))
    return [next((root / i / "images").iterdir()) for i in ids]


@functools.lru_cache(maxsize=None)
def tiny_predictor(**kwargs) -> NucleiPredictor:
    folder = tiny_checkpoint()
    kwargs.setdefault("score_threshold", 0.0)
    return NucleiPredictor(folder / "config.yaml", folder / "model_final.pth", device="cpu", **kwargs)


def check_labels(prediction):
    """Invariants of every label image: 1..n without gaps, one 8-connected region each."""
    import cv2

    labels = prediction.labels
    assert labels.dtype == np.uint16
    present = np.unique(labels)
    assert present.tolist() == list(range(0, prediction.num_objects + 1))[: len(present)]
    assert len(present) == prediction.num_objects + 1 or (prediction.num_objects == 0 and present.tolist() == [0])
    for label in present[1:]:
        count, _ = cv2.connectedComponents((labels == label).astype(np.uint8), connectivity=8)
        assert count == 2, f"label {label} is in several parts"
    assert np.all(np.diff(prediction.scores) <= 0), "labels are numbered by decreasing score"


@pytest.mark.parametrize("index", range(4), ids=["grey_rgba", "colour_he", "grey16_png", "grey16_tif"])
def test_every_file_kind_gives_consistent_labels_and_table(index):
    path = synthetic_images()[index]
    prediction = tiny_predictor().predict(path)
    stored = load_image_array(path)
    assert prediction.labels.shape == stored.shape[:2] == (96, 128)
    assert prediction.num_objects > 0 and prediction.source == str(path)
    check_labels(prediction)
    table = prediction.table
    assert [row["label"] for row in table] == list(range(1, prediction.num_objects + 1))
    for row in table:
        mask = prediction.labels == row["label"]
        rows, cols = np.nonzero(mask)
        assert row["area"] == mask.sum()
        assert row["centroid_y"] == pytest.approx(rows.mean()) and row["centroid_x"] == pytest.approx(cols.mean())
        assert (row["bbox_min_row"], row["bbox_max_row"]) == (rows.min(), rows.max() + 1)
        assert row["score"] == pytest.approx(float(prediction.scores[row["label"] - 1]))
        # Mean intensity is in the file's own units (16-bit counts for 16-bit files).
        assert row["mean_intensity"] == pytest.approx(float(grey_intensity(stored)[mask].mean()), rel=1e-5)
    if stored.dtype == np.uint16:
        assert min(row["mean_intensity"] for row in table) >= 100  # the synthetic camera offset


def test_array_and_path_give_the_same_prediction():
    path = synthetic_images()[2]
    from_path = tiny_predictor().predict(path)
    from_array = tiny_predictor().predict(load_image_array(path))
    assert np.array_equal(from_path.labels, from_array.labels)
    assert np.array_equal(from_path.scores, from_array.scores)
    assert from_array.source is None


def test_no_detections_gives_empty_labels_and_table():
    prediction = tiny_predictor(score_threshold=1.0).predict(synthetic_images()[0])
    assert prediction.num_objects == 0 and prediction.table == []
    assert prediction.labels.shape == (96, 128) and prediction.labels.dtype == np.uint16 and not prediction.labels.any()


def test_scale_factor_predicts_at_file_resolution():
    prediction = tiny_predictor(scale=1.5).predict(synthetic_images()[1])
    assert prediction.labels.shape == (96, 128) and prediction.scale == pytest.approx((1.5, 1.5))
    check_labels(prediction)


@pytest.mark.parametrize("tile_size", [None, 48], ids=["whole", "tiled"])
def test_bright_nuclei_predicts_a_bright_grey_image_as_its_inverse(tile_size):
    dark = load_image_array(synthetic_images()[0])  # grey RGBA: bright nuclei on a dark background
    bright = dark.copy()
    bright[..., :3] = 255 - dark[..., :3]  # the same nuclei, dark on bright; alpha kept
    tiling = dict(tile_size=tile_size, tile_overlap=16)
    plain = tiny_predictor(**tiling).predict(dark)
    inverting = tiny_predictor(opts=("INPUT.BRIGHT_NUCLEI", "grey"), **tiling)
    found = inverting.predict(bright)
    assert plain.num_objects > 0 and found.num_tiles == plain.num_tiles and (found.num_tiles > 1) == bool(tile_size)
    assert np.array_equal(found.labels, plain.labels) and np.array_equal(found.scores, plain.scores)
    assert np.array_equal(found.image, bright[..., :3])  # the image as read, for overlays
    assert np.array_equal(inverting.predict(dark).labels, plain.labels)  # a dark image is left alone
    assert not np.array_equal(tiny_predictor(**tiling).predict(bright).labels, plain.labels)


def test_grey_intensity_drops_alpha_and_averages_colour():
    rgba = np.dstack([np.full((2, 2), v, np.uint8) for v in (10, 20, 30, 255)])
    assert np.allclose(grey_intensity(rgba), 20)
    grey16 = np.full((2, 2), 4000, np.uint16)
    assert grey_intensity(grey16) is grey16


# -- setup errors: one line naming the file, not a traceback ----------------------------------

def setup_error(config, weights) -> str:
    with pytest.raises(SetupError) as caught:
        NucleiPredictor(config, weights, device="cpu")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_weights_file():
    message = setup_error(tiny_checkpoint() / "config.yaml", "/nowhere/model_final.pth")
    assert "/nowhere/model_final.pth" in message and "no such file" in message


def test_missing_config_file():
    message = setup_error("/nowhere/config.yaml", tiny_checkpoint() / "model_final.pth")
    assert "/nowhere/config.yaml" in message and "not found" in message


def test_bad_config_key():
    folder = tiny_checkpoint()
    with pytest.raises(SetupError, match="MODEL.NO_SUCH_KEY"):
        NucleiPredictor(folder / "config.yaml", folder / "model_final.pth", opts=["MODEL.NO_SUCH_KEY", "1"])


def test_weights_of_another_architecture(tmp_path):
    # The same checkpoint against a config whose neck and heads are of other widths.
    message = setup_error("mask_rcnn_plain_R50", tiny_checkpoint() / "model_final.pth")
    assert "model_final.pth" in message and "do not match mask_rcnn_plain_R50" in message
    assert "of another shape" in message and "missing" in message


def test_weights_that_are_not_a_checkpoint(tmp_path):
    garbage = tmp_path / "model_final.pth"
    garbage.write_text("not a checkpoint")
    message = setup_error(tiny_checkpoint() / "config.yaml", garbage)
    assert str(garbage) in message and "cannot read a checkpoint" in message


def test_config_without_masks_is_refused():
    folder = tiny_checkpoint()
    with pytest.raises(SetupError, match="needs a Mask R-CNN config"):
        NucleiPredictor(folder / "config.yaml", folder / "model_final.pth", opts=["MODEL.MASK_ON", "False"])


def test_uint32_labels_survive_the_tiff(tmp_path):
    from sharp_fpn.predict.writers import write_label_tiff

    labels = np.zeros((4, 5), np.uint32)
    labels[1, 1], labels[2, 3] = 70000, 65536
    read = tifffile.imread(write_label_tiff(tmp_path / "x_labels.tif", labels))
    assert read.dtype == np.uint32 and np.array_equal(read, labels)
