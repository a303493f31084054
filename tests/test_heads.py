"""The high-IoU heads Detectron2 ships, on a skip-scheme neck: Cascade R-CNN's box head and
PointRend's mask head, each selected by a recipe config (configs/nuclei_R18_cpu_{cascade,
pointrend}.yaml). A tiny run of each trains, evaluates, exports and predicts as the standard
heads do, with test-time flips too."""
import subprocess
import sys

import numpy as np
import pytest
from test_predict import synthetic_images
from test_train_net import ROOT, TINY, data  # noqa: F401  (data: the fixture)

from sharp_fpn import get_sharp_cfg
from sharp_fpn.predict import NucleiPredictor
from sharp_fpn.predict.pretrained import export_model

HEADS = {"cascade": ("CascadeROIHeads", "MaskRCNNConvUpsampleHead"), "pointrend": ("StandardROIHeads", "PointRendMaskHead")}
SMALL = ["INPUT.RESIZE", "shortest_edge", "INPUT.CROP.ENABLED", "False", "MODEL.SHARP_FPN.SCHEME", "plain"]


@pytest.mark.parametrize("head", HEADS)
def test_the_config_puts_detectron2s_own_head_on_the_recipe(head):
    cfg = get_sharp_cfg(f"nuclei_R18_cpu_{head}.yaml")
    recipe = get_sharp_cfg("nuclei_R18_cpu.yaml")
    assert (cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.ROI_MASK_HEAD.NAME) == HEADS[head]
    assert cfg.INPUT == recipe.INPUT and cfg.SOLVER == recipe.SOLVER and cfg.MODEL.BACKBONE == recipe.MODEL.BACKBONE


@pytest.fixture(scope="module", params=list(HEADS))
def trained_head(request, data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp(request.param) / "run"
    cmd = ["--config", f"nuclei_R18_cpu_{request.param}.yaml"]
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), *cmd, "--train-json", str(data / "ann" / "train.json"),
                          "--test-json", str(data / "ann" / "val.json"), *TINY, *SMALL, "SOLVER.MAX_ITER", "2",
                          "OUTPUT_DIR", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return request.param, out


def test_a_head_trains_evaluates_and_reports_its_losses(trained_head):
    head, out = trained_head
    log = (out / "log.txt").read_text()
    assert ("loss_box_reg_stage2" if head == "cascade" else "loss_mask_point") in log
    assert (out / "model_final.pth").is_file() and (out / "inference" / "sharp_fpn_json_test" / "metrics.json").is_file()


@pytest.mark.parametrize("tta", [False, True], ids=["one_view", "flips"])
def test_a_head_predicts_labels_after_export(trained_head, tmp_path, tta):
    head, out = trained_head
    exported = export_model(out / "model_final.pth", tmp_path, name=f"tiny_{head}")
    predictor = NucleiPredictor(exported.config, exported.weights, device="cpu", score_threshold=0.0,
                                opts=SMALL, tta=tta)
    prediction = predictor.predict(synthetic_images()[0])
    labels = prediction.labels
    assert labels.shape == prediction.image.shape[:2]
    assert set(np.unique(labels)) == set(range(prediction.num_objects + 1))
