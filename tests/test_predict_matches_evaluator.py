"""One scale rule: scoring ``NucleiPredictor``'s label images gives the evaluator's numbers.

The evaluator sees each image through the test mapper (``INPUT.RESIZE``), the predictor through
its own resize and tiling; if they disagree on the scale, the model sees other pixels and finds
other objects. Checked with both rules, on images the shortest-edge rule shrinks, and with
test-time flips, which both paths apply at that one scale.
"""
import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.evaluation import inference_on_dataset
from test_predict import synthetic_images, tiny_checkpoint

from sharp_fpn.data.coco_export import convert_dsb2018
from sharp_fpn.data.register import register_coco_nuclei
from sharp_fpn.engine import Trainer
from sharp_fpn.evaluation import NucleiEvaluator
from sharp_fpn.evaluation.metrics import encode_masks, evaluate_image, segmentation_to_rle
from sharp_fpn.modeling.tta import with_test_time_flips
from sharp_fpn.predict import NucleiPredictor


def _label_scores(predictor, records):
    """Per-image DSB score and foreground IoU of the predictor's label images."""
    rows = []
    for record in records:
        prediction = predictor.predict(record["file_name"])
        labels = prediction.labels
        masks = [labels == k for k in range(1, prediction.num_objects + 1)]
        gt = [segmentation_to_rle(a["segmentation"], record["height"], record["width"]) for a in record["annotations"]]
        result = evaluate_image(gt, encode_masks(masks), prediction.scores)
        rows.append((result.dsb_score(), result.fg_iou))
    return np.array(rows)


@pytest.mark.parametrize("rule", [["INPUT.RESIZE", "shortest_edge"],
                                  ["INPUT.RESIZE", "scale", "INPUT.SCALE_TEST", "0.75"],
                                  ["INPUT.RESIZE", "scale", "INPUT.SCALE_TEST", "0.75", "TEST.AUG.ENABLED", "True",
                                   "INPUT.DIHEDRAL", "True"]],
                         ids=["shortest_edge", "scale", "scale_flips"])
def test_label_images_score_as_the_evaluator(rule, tmp_path):
    root = synthetic_images()[0].parents[2]  # four 96x128 images, one of each file kind
    convert_dsb2018(root, tmp_path / "ann", val_fraction=1.0, workers=1)
    name = f"test_predict_matches_{'_'.join(rule[1::2])}"
    register_coco_nuclei(name, tmp_path / "ann" / "val.json", root)
    records = DatasetCatalog.get(name)
    folder = tiny_checkpoint()
    predictor = NucleiPredictor(folder / "config.yaml", folder / "model_final.pth", device="cpu",
                                score_threshold=0.0, opts=rule, tile_size=0)
    cfg = predictor.cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (name,)
    evaluator = NucleiEvaluator(name, output_dir=str(tmp_path / "eval"), score_thresh=0.0)
    inference_on_dataset(with_test_time_flips(cfg, predictor.model), Trainer.build_test_loader(cfg, name), evaluator)
    per_image = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_image"]
    expected = np.array([(row["dsb_score"], row["fg_iou"]) for row in per_image])

    found = _label_scores(predictor, records)
    assert expected[:, 1].mean() > 0.05, "the tiny model must find some foreground for this to test anything"
    np.testing.assert_allclose(found.mean(axis=0), expected.mean(axis=0), atol=0.005)

    # The check has teeth: the old prediction rule (never shrink: file pixels) scores otherwise.
    at_file_scale = NucleiPredictor(folder / "config.yaml", folder / "model_final.pth", device="cpu",
                                    score_threshold=0.0, opts=rule, tile_size=0, scale=1.0)
    assert abs(_label_scores(at_file_scale, records)[:, 1].mean() - expected[:, 1].mean()) > 0.005
