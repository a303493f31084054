"""Every shipped yaml builds, takes one train step and runs one inference at a tiny size."""
import pytest
import torch
from conftest import nuclei_batch, tiny_overrides
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from sharp_fpn import get_sharp_cfg
from sharp_fpn.config import CONFIG_DIR, resolve_config_path

MODEL_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("mask_rcnn_*.yaml"))


def test_all_variants_are_shipped():
    expected = {f"mask_rcnn_{s}_{b}.yaml" for s in ("plain", "nested", "fullscale", "sharp")
                for b in ("R50", "R101", "VGG16")}
    assert expected <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_config_trains_and_predicts(name):
    torch.manual_seed(0)
    cfg = get_sharp_cfg(name, tiny_overrides())
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 10 and cfg.INPUT.MASK_FORMAT == "bitmask"
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(nuclei_batch())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": nuclei_batch(1)[0]["image"], "height": 64, "width": 64}])
    inst = out["instances"]
    assert inst.image_size == (64, 64) and inst.pred_masks.shape[1:] == (64, 64)


def test_dsb_base_settings():
    cfg = get_sharp_cfg("mask_rcnn_sharp_R101")
    assert cfg.MODEL.SHARP_FPN.SCHEME == "sharp" and cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES[0] == [8]
    assert cfg.TEST.DETECTIONS_PER_IMAGE >= 500
    assert cfg.MODEL.RESNETS.NORM == "GN" and not cfg.MODEL.WEIGHTS


def test_symbols_and_bad_names_from_the_command_line():
    cfg = get_sharp_cfg("mask_rcnn_plain_R50.yaml", ["MODEL.SHARP_FPN.SCHEME", "+++"])
    assert cfg.MODEL.SHARP_FPN.SCHEME == "full_scale"
    with pytest.raises(ValueError, match="Unknown skip scheme 'unet4'"):
        get_sharp_cfg("mask_rcnn_plain_R50", ["MODEL.SHARP_FPN.SCHEME", "unet4"])
    with pytest.raises(ValueError, match="MODEL.SHARP_FPN.FUSION = 'max'"):
        get_sharp_cfg("mask_rcnn_plain_R50", ["MODEL.SHARP_FPN.FUSION", "max"])
    with pytest.raises(FileNotFoundError, match="mask_rcnn_sharp_R18"):
        resolve_config_path("mask_rcnn_sharp_R18")


def test_conv_keys_reach_the_built_neck():
    """pw_dw is the default form; CONV 3x3 selects Eq. 1's literal convs, at 3x the neck's size."""
    from detectron2.modeling import build_backbone

    cheap = build_backbone(get_sharp_cfg("mask_rcnn_sharp_R50", ["MODEL.SHARP_FPN.ROW_CONV_CHANNELS", "64",
                                                                 "MODEL.DEVICE", "cpu"]))
    literal = build_backbone(get_sharp_cfg("mask_rcnn_sharp_R50", ["MODEL.SHARP_FPN.CONV", "3x3", "MODEL.DEVICE", "cpu"]))
    assert (cheap.conv, cheap.row_conv_channels) == ("pw_dw", 64) and (literal.conv, literal.row_conv_channels) == ("3x3", 0)
    count = lambda m: sum(p.numel() for k, p in m.named_parameters() if not k.startswith("bottom_up"))  # noqa: E731
    assert 3 * count(cheap) < count(literal)
