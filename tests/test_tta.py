"""Test-time flips: each view's detections come back to the file's pixels, and the views are the
flips the model was trained for.

A view alone must give exactly what the model gives on the flipped image, flipped back: that
checks the box and mask inversions (Detectron2's own TTA undoes horizontal flips only). The
model is a random-weight tiny Mask R-CNN, so its box-relative masks have no symmetry that
would hide a missing flip.
"""
import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from detectron2.modeling import build_model
from test_predict import TINY_MODEL, one_torch_thread  # noqa: F401  (fixture)

from sharp_fpn.config import get_sharp_cfg
from sharp_fpn.engine import SetupError, check_run
from sharp_fpn.modeling.tta import FlipTTA, FlipViews, flip_views, with_test_time_flips


def _cfg(*opts):
    return get_sharp_cfg("mask_rcnn_sharp_R50", tiny_overrides(64) + TINY_MODEL + list(opts))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model(_cfg())
    return model.eval()


def _image(seed=0, height=72, width=88):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (3, height, width)).astype(np.float32)
    image[:, 20:40, 30:44] += 150  # one bright blob off the centre: no view is the image itself
    return torch.from_numpy(image)


def _flip(tensor, horizontal, vertical):
    """Flip the last two axes (H, W) of an image or a stack of masks."""
    dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
    return tensor.flip(dims=dims) if dims else tensor


def test_views_are_the_trained_flips():
    assert flip_views(False, False) == [(False, False)]
    assert flip_views(True, False) == [(False, False), (True, False)]
    assert flip_views(True, True) == [(False, False), (True, False), (False, True), (True, True)]
    assert len(FlipTTA(_cfg("TEST.AUG.ENABLED", "True"), build_model(_cfg())).tta_mapper.views) == 2
    assert len(FlipTTA(_cfg("TEST.AUG.ENABLED", "True", "INPUT.DIHEDRAL", "True"), build_model(_cfg())).tta_mapper.views) == 4
    plain = build_model(_cfg())
    assert with_test_time_flips(_cfg(), plain) is plain


@pytest.mark.parametrize("view", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["identity", "horizontal", "vertical", "both"])
def test_one_view_is_the_model_on_the_flipped_image(model, view):
    image = _image()
    height, width = 90, 110  # the file's size: the input was resized from it, as the test mapper does
    tta = FlipTTA(_cfg("TEST.AUG.ENABLED", "True", "INPUT.DIHEDRAL", "True"), model)
    tta.tta_mapper = FlipViews([view])
    with torch.no_grad():
        found = tta([{"image": image, "height": height, "width": width}])[0]["instances"]
        expected = model([{"image": _flip(image, *view), "height": height, "width": width}])[0]["instances"]
    assert len(expected) > 0, "the model must detect something for this to test anything"
    assert len(found) == len(expected)
    order = torch.argsort(expected.scores, descending=True)
    expected = expected[order]
    boxes = expected.pred_boxes.tensor.clone()
    if view[0]:
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if view[1]:
        boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
    found = found[torch.argsort(found.scores, descending=True)]
    torch.testing.assert_close(found.scores, expected.scores)
    torch.testing.assert_close(found.pred_boxes.tensor, boxes, atol=1e-3, rtol=0)
    back = _flip(expected.pred_masks, *view)
    assert found.pred_masks.shape == back.shape == (len(expected), height, width)
    disagree = (found.pred_masks != back).float().mean().item()
    assert disagree < 1e-3, f"{disagree:.2%} of mask pixels differ from the flipped-back model output"
    if view != (False, False):  # the check has teeth: the unflipped masks differ
        assert (found.pred_masks != expected.pred_masks).float().mean().item() > 10 * max(disagree, 1e-4)


def test_four_views_commute_with_flips(model):
    """With all four views, flipping the input flips the output: the views of a flipped image
    are the same four images, so the same boxes are merged and the same masks averaged."""
    image = _image(1)
    tta = FlipTTA(_cfg("TEST.AUG.ENABLED", "True", "INPUT.DIHEDRAL", "True"), model)
    with torch.no_grad():
        direct = tta([{"image": image, "height": 72, "width": 88}])[0]["instances"]
        mirrored = tta([{"image": _flip(image, True, False), "height": 72, "width": 88}])[0]["instances"]
    assert len(direct) > 0
    assert len(mirrored) == len(direct)
    direct = direct[torch.argsort(direct.scores, descending=True)]
    mirrored = mirrored[torch.argsort(mirrored.scores, descending=True)]
    torch.testing.assert_close(mirrored.scores, direct.scores, atol=1e-5, rtol=0)
    disagree = (_flip(mirrored.pred_masks, True, False) != direct.pred_masks).float().mean().item()
    assert disagree < 1e-3


def test_test_time_flips_are_for_mask_rcnn_only():
    cfg = get_sharp_cfg("unet_plain.yaml", ["TEST.AUG.ENABLED", "True"])
    with pytest.raises(SetupError, match="TEST.AUG.ENABLED .* is for Mask R-CNN"):
        check_run(cfg, eval_only=True)
