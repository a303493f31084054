"""NucleiEvaluator end to end: a registered two-image dataset, real Instances, hand-computed numbers."""

import json
import logging
import math
import os
import stat
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import print_csv_format
from detectron2.structures import Boxes, BoxMode, Instances
from conftest import COCO_BACKENDS as BACKENDS  # the end-to-end numbers hold with either library
from PIL import Image

from sharp_fpn.evaluation import NucleiEvaluator


SHAPE = (12, 12)
GT_A = (0, 0, 4, 4)  # y0, x0, height, width
GT_B = (6, 6, 4, 4)
B_WIDER = (6, 6, 4, 6)  # contains B: IoU 16/24 = 2/3, a match at IoU 0.50 .. 0.65 only
JUNK = (0, 8, 2, 2)  # touches nothing, low score


def box_mask(y0, x0, h, w):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def annotation(box):
    rle = mask_util.encode(np.asfortranarray(box_mask(*box).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # as read back from a COCO JSON file
    y0, x0, h, w = box
    return {
        "bbox": [x0, y0, w, h],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "segmentation": rle,
    }


def instances(boxes, scores):
    """Real Detectron2 outputs: bool masks at image size, XYXY boxes, scores, classes."""
    result = Instances(SHAPE)
    result.pred_masks = (
        torch.from_numpy(np.stack([box_mask(*b) for b in boxes]))
        if boxes
        else torch.zeros((0, *SHAPE), dtype=torch.bool)
    )
    result.pred_boxes = Boxes(
        torch.tensor(
            [[x0, y0, x0 + w, y0 + h] for y0, x0, h, w in boxes], dtype=torch.float32
        ).reshape(-1, 4)
    )
    result.scores = torch.tensor(scores, dtype=torch.float32)
    result.pred_classes = torch.zeros(len(boxes), dtype=torch.long)
    return result


@pytest.fixture
def dataset(tmp_path):
    """Image "a": nuclei A and B; image "b": nucleus A. Tiny PNGs on disk, RLE annotations."""
    name = f"nuclei_eval_test_{uuid.uuid4().hex[:8]}"
    dicts = []
    for image_id, boxes in (("a", [GT_A, GT_B]), ("b", [GT_A])):
        file_name = tmp_path / f"{image_id}.png"
        Image.fromarray(np.zeros(SHAPE, dtype=np.uint8)).save(file_name)
        dicts.append(
            {
                "file_name": str(file_name),
                "image_id": image_id,
                "height": SHAPE[0],
                "width": SHAPE[1],
                "annotations": [annotation(b) for b in boxes],
            }
        )
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["nucleus"])
    yield name, dicts
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def run_evaluator(evaluator, dicts):
    evaluator.reset()
    inputs = [
        {"image_id": d["image_id"], "height": d["height"], "width": d["width"]} for d in dicts
    ]
    # Image a: A exact (0.9), B found too wide (0.8), junk below the score threshold (0.3).
    # Image b: nothing found.
    evaluator.process(
        inputs[:1], [{"instances": instances([GT_A, B_WIDER, JUNK], [0.9, 0.8, 0.3])}]
    )
    evaluator.process(inputs[1:], [{"instances": instances([], [])}])
    return evaluator.evaluate()


@pytest.mark.parametrize("backend", BACKENDS)
def test_numbers_and_metrics_json(dataset, tmp_path, caplog, backend):
    name, dicts = dataset
    out_dir = tmp_path / "eval"
    with caplog.at_level(logging.INFO, logger="sharp_fpn.evaluation.evaluator"):
        results = run_evaluator(
            NucleiEvaluator(name, output_dir=str(out_dir), coco_backend=backend), dicts
        )
    assert f"COCO segm AP in %, up to 500 detections per image, by {backend} " in caplog.text

    # COCO: 3 nuclei, detections A (0.9, IoU 1), B_WIDER (0.8, IoU 2/3), JUNK (0.3).
    # IoU thresholds 0.50 .. 0.65: precision 1 up to recall 2/3 -> 67 of 101 recall points.
    # 0.70 .. 0.95: only A matches, precision 1 up to recall 1/3 -> 34 of 101.
    for iou_type in ("bbox", "segm"):
        coco = results[iou_type]
        assert coco["AP"] == pytest.approx(100 * (4 * 67 + 6 * 34) / 10 / 101)
        assert coco["AP50"] == pytest.approx(100 * 67 / 101) and coco["AP75"] == pytest.approx(
            100 * 34 / 101
        )
        assert coco["APs"] == pytest.approx(coco["AP"])  # every nucleus is small
        assert math.isnan(coco["APm"]) and math.isnan(coco["APl"])

    nuclei = results["nuclei"]
    # DSB: image a matches B at 4 of 10 thresholds -> (4 * 1 + 6 * 1/3) / 10 = 0.6; image b 0.
    assert nuclei["dsb_score"] == pytest.approx(0.3)
    # Pooled at IoU 0.5 (JUNK is below the 0.5 score threshold): TP 2, FP 0, FN 1.
    assert nuclei["f1@0.5"] == pytest.approx(4 / 5)
    assert nuclei["precision@0.5"] == 1.0 and nuclei["recall@0.5"] == pytest.approx(2 / 3)
    # Foreground: image a: GT 32 px, predicted 40 px, overlap 32 -> IoU 0.8, Dice 64/72.
    # Image b: GT 16 px, nothing predicted -> 0, 0. Pooled: overlap 32, GT 48, predicted 40.
    assert nuclei["fg_iou"] == pytest.approx(0.4) and nuclei["fg_dice"] == pytest.approx(4 / 9)
    assert nuclei["fg_iou_pooled"] == pytest.approx(32 / 56) and nuclei[
        "fg_dice_pooled"
    ] == pytest.approx(64 / 88)

    print_csv_format(results)  # Detectron2's own summary accepts the layout

    assert sorted(p.name for p in out_dir.iterdir()) == ["metrics.json"]  # no temp file left behind
    written = json.loads((out_dir / "metrics.json").read_text())
    assert written["nuclei"] == pytest.approx(nuclei)
    assert written["segm"]["APm"] is None  # NaN is written as null, to keep the JSON standard
    assert (
        written["num_images"] == 2 and written["max_dets"] == 500 and written["score_thresh"] == 0.5
    )
    assert written["coco_backend"] == backend and written["coco_backend_version"]
    assert written["dsb_score_per_threshold"]["0.65"] == pytest.approx(0.5)
    assert written["dsb_score_per_threshold"]["0.70"] == pytest.approx(1 / 6)
    per_image = {row["image_id"]: row for row in written["per_image"]}
    assert per_image["a"]["dsb_score"] == pytest.approx(0.6) and per_image["b"]["num_pred"] == 0
    # TP/FP/FN at IoU 0.5 per image: a finds A and B (JUNK is below the score threshold), b
    # misses A. Summed, they are the pooled counts behind f1@0.5, to the last bit.
    counts = {i: tuple(row[k] for k in ("tp@0.5", "fp@0.5", "fn@0.5")) for i, row in per_image.items()}
    assert counts == {"a": (2, 0, 0), "b": (0, 0, 1)}
    tp, fp, fn = np.sum(list(counts.values()), axis=0)
    assert 2 * tp / (2 * tp + fp + fn) == written["nuclei"]["f1@0.5"] == nuclei["f1@0.5"]


def test_score_threshold_decides_what_the_nuclei_metrics_see(dataset):
    name, dicts = dataset
    results = run_evaluator(NucleiEvaluator(name, score_thresh=0.0, distributed=False), dicts)
    # JUNK now counts: TP 2, FP 1, FN 1 -> F1 4/6. COCO AP does not change.
    assert results["nuclei"]["f1@0.5"] == pytest.approx(2 / 3)
    assert results["segm"]["AP50"] == pytest.approx(100 * 67 / 101)


def test_errors_name_the_image(dataset):
    name, _ = dataset
    evaluator = NucleiEvaluator(name)
    evaluator.reset()
    with pytest.raises(KeyError, match="'c'"):
        evaluator.process([{"image_id": "c"}], [{"instances": instances([], [])}])
    wrong_size = Instances((8, 8))
    wrong_size.pred_masks = torch.zeros((1, 8, 8), dtype=torch.bool)
    wrong_size.pred_boxes = Boxes(torch.zeros((1, 4)))
    wrong_size.scores = torch.ones(1)
    with pytest.raises(ValueError, match=r"image 'a'.*\(8, 8\)"):
        evaluator.process([{"image_id": "a"}], [{"instances": wrong_size}])


def test_max_dets_keeps_the_best_detections_for_every_metric(dataset):
    name, dicts = dataset
    results = run_evaluator(NucleiEvaluator(name, max_dets=1, distributed=False), dicts)
    # Only A (0.9) survives in image a: TP 1, FP 0, FN 2 -> F1 2/4; DSB (1/2 + 0) / 2.
    assert results["nuclei"]["f1@0.5"] == pytest.approx(1 / 2)
    assert results["nuclei"]["dsb_score"] == pytest.approx(1 / 4)
    assert results["segm"]["AP50"] == pytest.approx(100 * 34 / 101)  # precision 1 up to recall 1/3


def test_without_detections_precision_is_undefined(dataset, tmp_path, caplog):
    name, dicts = dataset
    evaluator = NucleiEvaluator(name, output_dir=str(tmp_path), distributed=False)
    inputs = [{"image_id": d["image_id"]} for d in dicts]
    with caplog.at_level(logging.INFO, logger="sharp_fpn.evaluation.evaluator"):
        evaluator.process(inputs, [{"instances": instances([], [])} for _ in inputs])
        nuclei = evaluator.evaluate()["nuclei"]
    # TP 0, FP 0, FN 3: precision 0/0 is undefined, not 1 (nor 0: nothing was wrongly found).
    assert math.isnan(nuclei["precision@0.5"])
    assert nuclei["recall@0.5"] == 0.0 and nuclei["f1@0.5"] == 0.0 and nuclei["dsb_score"] == 0.0
    table = caplog.text[caplog.text.index("Nuclei metrics") :]
    header, _, values = table.splitlines()[1:4]
    cells = dict(zip(header.strip("|").split("|"), values.strip("|").split("|")))
    assert {k.strip(): v.strip() for k, v in cells.items()}["precision@0.5"] == "n/a"
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["nuclei"]["precision@0.5"] is None and written["nuclei"]["recall@0.5"] == 0.0


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_metrics_json_mode_follows_the_umask(dataset, tmp_path, umask):
    # As every other output: 0666 less the umask (-rw-r--r-- with the usual 022).
    name, dicts = dataset
    out_dir = tmp_path / "eval"
    previous = os.umask(umask)
    try:
        run_evaluator(NucleiEvaluator(name, output_dir=str(out_dir), distributed=False), dicts)
    finally:
        os.umask(previous)
    assert sorted(p.name for p in out_dir.iterdir()) == ["metrics.json"]
    assert stat.S_IMODE((out_dir / "metrics.json").stat().st_mode) == 0o666 & ~umask
