"""benchmarks/score_thresholds.py: one inference pass, hard metrics per score threshold."""
import json
import sys
from pathlib import Path

from test_predict import synthetic_images, tiny_checkpoint

from sharp_fpn.data.coco_export import convert_dsb2018

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import score_thresholds  # noqa: E402


def test_higher_thresholds_keep_fewer_detections(tmp_path):
    root = synthetic_images()[0].parents[2]
    convert_dsb2018(root, tmp_path / "ann", val_fraction=1.0, workers=1)
    score_thresholds.main([str(tiny_checkpoint()), "--val-json", str(tmp_path / "ann" / "val.json"),
                           "--image-root", str(root), "--thresholds", "0.0", "0.6", "1.01",
                           "--output-dir", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "score_thresholds.json").read_text())["rows"]
    assert [row[0] for row in rows] == [0.0, 0.6, 1.01]
    kept = [sum(r["num_pred"] for r in json.loads((tmp_path / "out" / f"thresh_{t}" / "metrics.json")
                                                   .read_text())["per_image"]) for t in (0.0, 0.6, 1.01)]
    assert kept[0] >= kept[1] >= kept[2] == 0 < kept[0]
    assert float(rows[2][3]) == 0.0  # nothing kept: no foreground found
