"""benchmarks/iou_definitions.py at test size: trains, keeps predictions, scores every
definition, and scores kept predictions again without training."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import iou_definitions  # noqa: E402

from sharp_fpn.unet.data import synthetic_semantic_set  # noqa: E402
from sharp_fpn.unet.metrics import ForegroundScores  # noqa: E402

TINY_RUN = ["--data", "synthetic", "--runs", "unet#_ds", "--epochs", "1", "--filters", "4,8,16,32,64",
            "--size", "64", "--batch-size", "4", "--device", "cpu"]


def test_study_trains_keeps_predictions_and_rescores_them(tmp_path, capsys):
    iou_definitions.main([*TINY_RUN, "--out", str(tmp_path / "study")])
    result = json.loads((tmp_path / "study" / "iou_definitions.json").read_text())
    scores = result["runs"]["unet#_ds"]
    assert list(scores) == ["images", *iou_definitions.DEFINITIONS]
    assert all(0 <= scores[name] <= 1 for name in iou_definitions.DEFINITIONS)
    assert scores["iou_batch128"] == pytest.approx(scores["iou_pooled"])  # 3 images: one batch

    # the kept predictions are the validation split, and score as the table says
    kept = np.load(tmp_path / "study" / "predictions" / "unetsharp_ds.npz")
    _, val = synthetic_semantic_set(16, 64).split(0.2, 0)
    assert list(kept["ids"]) == val.ids and np.array_equal(kept["masks"][:, 0], val.masks)
    assert kept["probabilities"].shape == (3, 1, 64, 64) and scores["images"] == 3
    direct = ForegroundScores()
    direct.update(torch.from_numpy(kept["probabilities"].astype(np.float32)), torch.from_numpy(kept["masks"]))
    assert direct.summary()["soft_dice"] == pytest.approx(scores["soft_dice"])

    table = (tmp_path / "study" / "iou_definitions.md").read_text()
    assert "| unet#_ds | 3 | 92.67 |" in table and "seed minus ours" in table

    iou_definitions.main(["--from-predictions", str(tmp_path / "study"), "--out", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "iou_definitions.json").read_text())
    assert again["runs"] == result["runs"]


def test_study_needs_data_or_predictions(tmp_path, capsys):
    with pytest.raises(SystemExit):
        iou_definitions.main(["--runs", "unet"])
    assert "give --data (to train) or --from-predictions DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no predictions"):
        iou_definitions.main(["--from-predictions", str(tmp_path)])
