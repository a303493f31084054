"""benchmarks/score_thresholds.py: one inference pass, hard metrics per score threshold."""
import json
import sys
from pathlib import Path

from test_predict import synthetic_images, tiny_checkpoint

from sharp_fpn import get_sharp_cfg
from sharp_fpn.data.coco_export import convert_dsb2018
from sharp_fpn.engine import Trainer, load_model_for_eval, register_json_datasets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import by_image  # noqa: E402
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


def test_config_overrides_reach_the_model_and_each_threshold_is_a_run(tmp_path):
    """--opts TEST.AUG.ENABLED True evaluates through test-time flips; by_image.py reads each
    threshold's metrics.json as a run of its own."""
    root = synthetic_images()[0].parents[2]
    convert_dsb2018(root, tmp_path / "ann", val_fraction=1.0, workers=1)
    common = [str(tiny_checkpoint()), "--val-json", str(tmp_path / "ann" / "val.json"), "--image-root", str(root),
              "--thresholds", "0.0"]
    score_thresholds.main(common + ["--output-dir", str(tmp_path / "plain")])
    score_thresholds.main(common + ["--output-dir", str(tmp_path / "flips"), "--opts", "TEST.AUG.ENABLED", "True"])
    assert json.loads((tmp_path / "flips" / "score_thresholds.json").read_text())["opts"] == ["TEST.AUG.ENABLED", "True"]
    plain, flips = (by_image.per_image(tmp_path / run / "thresh_0.0" / "metrics.json") for run in ("plain", "flips"))
    assert plain.keys() == flips.keys() and len(plain) == 4
    # the flipped views add detections the single view does not make (merged by NMS)
    assert [flips[i]["num_pred"] for i in flips] != [plain[i]["num_pred"] for i in plain]


def test_each_threshold_scores_as_the_training_evaluator(tmp_path):
    """The sweep's evaluators are Trainer.build_evaluator's (the same max_dets, the same COCO
    settings) with another score_thresh: at the evaluator's 0.5 the row is train_net.py's, its
    segm AP too (the model keeps the detections under 0.5 that AP ranks)."""
    root = synthetic_images()[0].parents[2]
    convert_dsb2018(root, tmp_path / "ann", val_fraction=1.0, workers=1)
    val_json, folder = str(tmp_path / "ann" / "val.json"), tiny_checkpoint()
    score_thresholds.main([str(folder), "--val-json", val_json, "--image-root", str(root), "--thresholds", "0.5",
                           "--output-dir", str(tmp_path / "sweep")])
    cfg = get_sharp_cfg(str(folder / "config.yaml"), ["MODEL.WEIGHTS", str(folder / "model_final.pth"),
                                                      "OUTPUT_DIR", str(tmp_path / "train")])
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST < 0.5
    register_json_datasets(cfg, None, val_json, str(root))
    results = Trainer.test(cfg, load_model_for_eval(cfg).eval())
    sweep, trained = (json.loads(path.read_text()) for path in
                      (tmp_path / "sweep" / "thresh_0.5" / "metrics.json",
                       *(tmp_path / "train" / "inference").glob("*/metrics.json")))
    assert sweep["per_image"] == trained["per_image"] and len(sweep["per_image"]) == 4
    row = json.loads((tmp_path / "sweep" / "score_thresholds.json").read_text())["rows"][0]
    assert float(row[1]) == round(results["nuclei"]["dsb_score"], 4)
    assert float(row[-1]) == round(results["segm"]["AP"], 2)
