#!/usr/bin/env python
"""Score label images of any tool with sharp_fpn's own evaluator, overall and by image kind.

    python benchmarks/peers/score.py LABELS_DIR --val-json ann/val.json [--image-root STAGE_DIR]
        [--name stardist] [--output-dir OUT] [--only-predicted]

LABELS_DIR holds ``<id>_labels.tif`` per image of the val JSON (an image's id is its file stem,
as the peer scripts and tools/predict.py name their outputs) and, where present,
``<id>_objects.csv`` with ``label`` and ``score`` columns (the peer scripts and
``tools/predict.py --objects`` write it); without it every object scores 1. Each label image
goes through sharp_fpn.predict.writers.coco_results, the label-image-to-COCO step of
``tools/predict.py --coco``, and then through sharp_fpn.evaluation.NucleiEvaluator, the code
that scores our models: DSB score, COCO segm AP (up to 500 objects per image, ranked by score),
F1@0.5, foreground IoU and Dice. A label image is a finished decision, so the evaluator keeps
every object (score threshold 0). Groups are the image kinds of sharp_fpn.data.kinds, by stain
(fluorescence, brightfield, tissue) and, where a stain comes in two sizes, by stain and size.

Writes OUT/inference/<dataset>/metrics.json, the evaluator's file with its per-image rows, so OUT
serves as a RUN_DIR of benchmarks/by_image.py; and OUT/peer_score.json and .md with the table.
Where LABELS_DIR has a predict_timings.json (the peer scripts write one) the table adds the
prediction seconds per megapixel of the scored images. OUT defaults to output/peer_scores/<name>.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
for folder in (BENCHMARKS, BENCHMARKS / "peers"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402

from labels_io import LabelsError, find_label_images, kind_groups, read_label_image  # noqa: E402

OBJECTS_SUFFIX = "_objects.csv"
TIMINGS_NAME = "predict_timings.json"
MAX_DETS = 500


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels_dir", help="folder of <id>_labels.tif (and <id>_objects.csv) files")
    p.add_argument("--val-json", required=True, help="the converter's val.json the images come from")
    p.add_argument("--image-root", help="folder its file_name are relative to (default: the one the converter recorded)")
    p.add_argument("--name", help="name of this run in the tables (default: the labels folder's name)")
    p.add_argument("--output-dir", help="where the results go (default: output/peer_scores/<name>)")
    p.add_argument("--only-predicted", action="store_true",
                   help="score only the images that have a label image (default: a missing one is an error)")
    p.add_argument("--max-dets", type=int, default=MAX_DETS, help="objects per image for COCO AP (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    args = p.parse_args(argv)
    args.name = args.name or Path(args.labels_dir).resolve().name
    args.output_dir = args.output_dir or str(Path("output") / "peer_scores" / args.name)
    return args


def read_scores(path: Path, labels: np.ndarray) -> np.ndarray:
    """scores[k - 1] of label k: from the objects CSV where it has the label, else 1."""
    scores = np.ones(int(labels.max()) if labels.size else 0, dtype=np.float64)
    if not path.is_file():
        return scores
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"label", "score"} <= set(reader.fieldnames):
            raise LabelsError(f"{path}: needs 'label' and 'score' columns, has {reader.fieldnames}")
        for row in reader:
            label = int(row["label"])
            if 1 <= label <= len(scores) and row["score"] not in ("", None):
                scores[label - 1] = float(row["score"])
    return scores


def label_instances(labels: np.ndarray, scores: np.ndarray, image_id: int):
    """Detectron2 Instances of a label image, one per object, through sharp_fpn's own
    label-image-to-COCO step (writers.coco_results: per object its RLE, box and score)."""
    import pycocotools.mask as mask_util
    import torch
    from detectron2.structures import Boxes, Instances

    from sharp_fpn.predict.writers import coco_results

    height, width = labels.shape
    results = coco_results(image_id, labels, scores)
    instances = Instances((height, width))
    if results:
        masks = mask_util.decode([r["segmentation"] for r in results])  # H x W x N
        instances.pred_masks = torch.from_numpy(np.ascontiguousarray(np.moveaxis(masks, -1, 0)).astype(bool))
        boxes = np.array([r["bbox"] for r in results], dtype=np.float32)
        boxes[:, 2:] += boxes[:, :2]  # XYWH -> XYXY
    else:
        instances.pred_masks = torch.zeros((0, height, width), dtype=torch.bool)
        boxes = np.zeros((0, 4), dtype=np.float32)
    instances.pred_boxes = Boxes(torch.from_numpy(boxes))
    instances.scores = torch.tensor([r["score"] for r in results], dtype=torch.float32)
    instances.pred_classes = torch.zeros(len(results), dtype=torch.int64)
    return instances


def register_subset(name: str, records: list) -> str:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from sharp_fpn.data.register import THING_CLASSES

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=list(THING_CLASSES), evaluator_type="coco")
    return name


def speed(labels_dir: Path, names: set) -> dict | None:
    """Seconds per megapixel of the scored images, from the tool's predict_timings.json."""
    path = labels_dir / TIMINGS_NAME
    if not path.is_file():
        return None
    timings = json.loads(path.read_text())
    rows = [r for r in timings.get("per_image", []) if r["image"] in names]
    megapixels = sum(r["height"] * r["width"] for r in rows) / 1e6
    if not rows or not megapixels:
        return None
    seconds = sum(r["seconds"] for r in rows)
    return {"images": len(rows), "seconds": seconds, "megapixels": megapixels, "s_per_megapixel": seconds / megapixels,
            "threads": timings.get("threads"), "tool": timings.get("tool"), "versions": timings.get("versions")}


def score(args) -> dict:
    from by_image import kinds_of
    from sharp_fpn.evaluation import NucleiEvaluator

    labels_dir, val_json = Path(args.labels_dir), Path(args.val_json)
    dataset = f"peer_{args.name}"
    records, stems, label_files, image_root = find_label_images(labels_dir, val_json, args.image_root,
                                                                args.only_predicted, dataset)
    groups = kind_groups(kinds_of(str(val_json), str(image_root)), records)
    inference_dir = Path(args.output_dir) / "inference" / dataset
    evaluators = {}
    for group, ids in groups.items():
        members = set(ids)
        name = register_subset(dataset if group == "all" else f"{dataset}/{group}",
                               [r for r in records if r["image_id"] in members])
        evaluators[group] = NucleiEvaluator(name, output_dir=str(inference_dir) if group == "all" else None,
                                            max_dets=args.max_dets, distributed=False, score_thresh=0.0)
        evaluators[group].reset()
    member_of = {i: [g for g, ids in groups.items() if i in set(ids)] for i in groups["all"]}
    for record in records:
        stem = stems[record["image_id"]]
        labels = read_label_image(label_files[stem], record["height"], record["width"])
        instances = label_instances(labels, read_scores(labels_dir / f"{stem}{OBJECTS_SUFFIX}", labels), record["image_id"])
        for group in member_of[record["image_id"]]:
            evaluators[group].process([{"image_id": record["image_id"]}], [{"instances": instances}])
    results = {group: {"images": len(groups[group]), **evaluator.evaluate()} for group, evaluator in evaluators.items()}
    return {"name": args.name, "labels_dir": str(labels_dir.resolve()), "val_json": str(val_json.resolve()),
            "images": len(records), "images_in_json": len(stems), "score_thresh": 0.0, "max_dets": args.max_dets,
            "metrics_json": str(inference_dir / "metrics.json"), "groups": results,
            "speed": speed(labels_dir, {stems[r["image_id"]] for r in records})}


def fmt(value, scale: float = 1.0, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.{digits}f}"


def table(payload: dict) -> str:
    import common

    rows = []
    for group, result in payload["groups"].items():
        nuclei, segm = result.get("nuclei", {}), result.get("segm", {})
        rows.append([group, result["images"], fmt(nuclei.get("dsb_score")), fmt(segm.get("AP"), digits=1),
                     fmt(segm.get("AP50"), digits=1), fmt(nuclei.get("f1@0.5")), fmt(nuclei.get("fg_iou")),
                     fmt(nuclei.get("fg_dice"))])
    text = (f"{payload['name']}: {payload['images']} of the {payload['images_in_json']} images of {payload['val_json']}, "
            f"label images scored by sharp_fpn's NucleiEvaluator (every object kept; segm AP ranks by score)\n\n"
            + common.markdown_table(["images", "n", "DSB", "segm AP", "AP50", "F1@0.5", "fg IoU", "fg Dice"], rows))
    if payload["speed"]:
        s = payload["speed"]
        text += (f"\n\nPrediction: {s['s_per_megapixel']:.2f} s per megapixel ({s['seconds']:.1f} s for "
                 f"{s['megapixels']:.2f} MP, {s['images']} images, {s['threads']} threads; {s['tool']} {s['versions']})")
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import common

        common.quiet()
        payload = score(args)
    except (LabelsError, OSError, ValueError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    markdown = table(payload)
    common.write_outputs(args.output_dir, "peer_score", payload, markdown)
    print(markdown)
    print(f"wrote {payload['metrics_json']} (a RUN_DIR for benchmarks/by_image.py: {args.output_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
