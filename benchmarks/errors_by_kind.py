#!/usr/bin/env python
"""Where each tool loses its score, by image kind: the nuclei it misses, the objects it adds,
and how close its matched outlines are.

    python benchmarks/errors_by_kind.py LABELS_DIR [LABELS_DIR ...] --val-json ann/val.json
        [--image-root STAGE_DIR] [--name NAME ...] [--output-dir OUT] [--only-predicted]

Each LABELS_DIR holds ``<id>_labels.tif`` per image of the val JSON, read as
benchmarks/peers/score.py reads them (benchmarks/peers/labels_io.py); the ground truth is the
JSON's non-crowd annotations, as the evaluator reads them. Image kinds and groups are score.py's
(sharp_fpn.data.kinds), plus "all". A prediction "covers" a true nucleus when it holds at least
half of the nucleus' area. Every true nucleus is matched or missed, every prediction matched or
extra, and each falls in exactly one class below (the first that applies):

  matched     a true nucleus and a prediction paired one to one at IoU > 0.5 by
              sharp_fpn.evaluation.metrics.match_instances, the evaluator's own matching.
  missed      a true nucleus left unpaired:
    merged      the prediction that covers it is matched to another true nucleus or covers
                another one too, so one object stands for several nuclei;
    outlined    the prediction that covers it covers no other nucleus and is matched to none:
                found, but its outline (too big, too small or shifted) stays at IoU <= 0.5;
    not found   no prediction covers it.
  extra       a prediction left unpaired:
    cell body or merge  it covers a true nucleus and its area is more than twice that nucleus';
    fragment    at least half of its own area lies inside one true nucleus;
    background  less than half of its own area lies on true nuclei at all;
    other       the rest: mostly on nuclei but neither, e.g. a shifted mask or one straddling two.
  match quality  over the matches of a kind's images pooled: the median IoU; the share of
              matches with IoU >= 0.75, 0.85 and 0.9 (the DSB score averages over IoU thresholds
              0.5 to 0.95: a match at IoU 0.74 counts at 5 of the 10, so outlines show here);
              the median ratio of predicted to true area (above 1: outlines too big).
  by size     the share of true nuclei matched, by their area in file pixels (AREA_BANDS:
              under 50, 50-150, 150-400, 400 and more): small nuclei are where recall goes.

Writes OUT/errors_by_kind.json (the counts per tool and kind, and per image) and
OUT/errors_by_kind.md (a table per kind, a row per tool); OUT defaults to output/errors_by_kind.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
for folder in (BENCHMARKS, BENCHMARKS / "peers"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402

from labels_io import LabelsError, find_label_images, kind_groups, read_label_image  # noqa: E402

MISSED = ("merged", "outlined", "not_found")
EXTRA = ("cell_body_or_merge", "fragment", "background", "other")
COUNTS = ("true", "predicted", "matched", "missed", *MISSED, "extra", *EXTRA)
IOU_LEVELS = (0.75, 0.85, 0.9)
COVERS = 0.5  # share of a true nucleus a prediction must hold to cover it
AREA_BANDS = (50, 150, 400)  # file pixels; a nucleus 8 px across is about 50 px
BAND_NAMES = (f"<{AREA_BANDS[0]}", *(f"{lo}-{hi}" for lo, hi in zip(AREA_BANDS, AREA_BANDS[1:])), f"{AREA_BANDS[-1]}+")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels_dirs", nargs="+", metavar="LABELS_DIR", help="folders of <id>_labels.tif files, one per tool")
    p.add_argument("--val-json", required=True, help="the converter's val.json the images come from")
    p.add_argument("--image-root", help="folder its file_name are relative to (default: the one the converter recorded)")
    p.add_argument("--name", action="append", dest="names", metavar="NAME",
                   help="name of a folder's tool in the tables, once per folder in their order (default: the folder's name)")
    p.add_argument("--output-dir", default="output/errors_by_kind", help="where the results go (default: %(default)s)")
    p.add_argument("--only-predicted", action="store_true",
                   help="count only the images that have a label image (default: a missing one is an error)")
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    args = p.parse_args(argv)
    if args.names and len(args.names) != len(args.labels_dirs):
        p.error(f"{len(args.names)} --name for {len(args.labels_dirs)} folders")
    args.names = args.names or [Path(d).resolve().name for d in args.labels_dirs]
    if len(set(args.names)) < len(args.names):
        p.error(f"two folders of the same name ({', '.join(args.names)}): give each a --name")
    return args


def overlaps(rles_a: list, rles_b: list):
    """Areas of a and b, and their (len(a), len(b)) IoUs and intersection areas. The
    intersection comes from pycocotools' IoU, I / (|a| + |b| - I), solved for I."""
    from pycocotools import mask as mask_util

    from sharp_fpn.evaluation.metrics import pairwise_iou

    # One RLE per call: pycocotools' area() of a list overflows past 255 objects under numpy 2.
    area_a = np.asarray([mask_util.area(rle) for rle in rles_a], dtype=np.float64)
    area_b = np.asarray([mask_util.area(rle) for rle in rles_b], dtype=np.float64)
    ious = pairwise_iou(rles_a, rles_b)
    return area_a, area_b, ious, np.rint(ious * (area_a[:, None] + area_b[None, :]) / (1 + ious))


def shares(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.divide(part, whole, out=np.zeros_like(part, dtype=np.float64), where=whole > 0)


def image_errors(gt: list, pred: list) -> dict:
    """The counts of one image (COUNTS), its matched IoUs and predicted-to-true area ratios,
    for non-overlapping predictions (a label image's objects)."""
    from pycocotools import mask as mask_util

    from sharp_fpn.evaluation.metrics import match_instances

    gt_area, pred_area, ious, inter = overlaps(gt, pred)
    covers = shares(inter, gt_area[:, None]) >= COVERS  # covers[g, p]: p holds half of nucleus g
    inside = shares(inter, pred_area[None, :])  # inside[g, p]: share of p's area inside g
    on_nuclei = shares(overlaps([mask_util.merge(gt)], pred)[3][0], pred_area) if gt and pred else np.zeros(len(pred))
    # Disjoint predictions give a nucleus at most one prediction at IoU > 0.5, so the evaluator's
    # greedy one-to-one matching gives each prediction its best nucleus above 0.5.
    candidates = np.where(ious > 0.5, ious, -1.0)
    partner = candidates.argmax(axis=0) if gt else np.zeros(len(pred), int)
    partner = np.where(candidates.max(axis=0, initial=-1.0) > 0, partner, -1)  # pred -> matched gt, or -1
    matched_ious = match_instances(gt, pred)
    pairs = [(g, p) for p, g in enumerate(partner) if g >= 0]
    assert np.allclose(np.sort(matched_ious), np.sort([ious[g, p] for g, p in pairs])), "predictions overlap"

    counts = dict.fromkeys(COUNTS, 0)
    counts.update(true=len(gt), predicted=len(pred), matched=len(pairs))
    matched_gt = {g for g, _ in pairs}
    for g in range(len(gt)):
        if g in matched_gt:
            continue
        best = int(inter[g].argmax()) if pred else -1
        if best < 0 or not covers[g, best]:
            kind = "not_found"
        elif partner[best] >= 0 or covers[:, best].sum() >= 2:
            kind = "merged"
        else:
            kind = "outlined"
        counts["missed"] += 1
        counts[kind] += 1
    for p in np.flatnonzero(partner < 0):
        if (covers[:, p] & (pred_area[p] > 2 * gt_area)).any():
            kind = "cell_body_or_merge"
        elif (inside[:, p] >= 0.5).any():
            kind = "fragment"
        elif on_nuclei[p] < 0.5:
            kind = "background"
        else:
            kind = "other"
        counts["extra"] += 1
        counts[kind] += 1
    band = np.digitize(gt_area, AREA_BANDS)
    is_matched = np.isin(np.arange(len(gt)), list(matched_gt))
    by_size = {name: [int(is_matched[band == b].sum()), int((band == b).sum())] for b, name in enumerate(BAND_NAMES)}
    return {**counts, "ious": matched_ious.tolist(), "area_ratios": [pred_area[p] / gt_area[g] for g, p in pairs],
            "matched_by_size": by_size}


def summary(rows: list) -> dict:
    """The counts of a group of images, summed, and the quality of their matches, pooled."""
    ious = np.concatenate([row["ious"] for row in rows]) if rows else np.zeros(0)
    ratios = np.concatenate([row["area_ratios"] for row in rows]) if rows else np.zeros(0)
    result = {"images": len(rows), **{key: sum(row[key] for row in rows) for key in COUNTS}}
    result["median_iou"] = float(np.median(ious)) if len(ious) else None
    result["iou_at_least"] = {str(t): float(np.mean(ious >= t)) if len(ious) else None for t in IOU_LEVELS}
    result["median_area_ratio"] = float(np.median(ratios)) if len(ratios) else None
    result["matched_by_size"] = {name: [sum(row["matched_by_size"][name][i] for row in rows) for i in (0, 1)]
                                 for name in BAND_NAMES}  # [matched, true]
    return result


def tool_errors(labels_dir: str, name: str, args, kinds: dict | None) -> tuple:
    """(this folder's payload, image kinds) from its label images against the val JSON."""
    from by_image import kinds_of
    from sharp_fpn.evaluation.metrics import segmentation_to_rle
    from sharp_fpn.predict.writers import coco_results

    found = find_label_images(labels_dir, args.val_json, args.image_root, args.only_predicted, f"errors_{name}")
    kinds = kinds or kinds_of(str(args.val_json), str(found.image_root))
    per_image = {}
    for record in found.records:
        height, width, stem = record["height"], record["width"], found.stems[record["image_id"]]
        labels = read_label_image(found.label_files[stem], height, width)
        pred = [segmentation_to_rle(r["segmentation"], height, width)
                for r in coco_results(record["image_id"], labels, np.ones(int(labels.max()) if labels.size else 0))]
        gt = [segmentation_to_rle(a["segmentation"], height, width)
              for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        per_image[record["image_id"]] = {"image": stem, "kind": kinds[record["image_id"]], **image_errors(gt, pred)}
    groups = kind_groups(kinds, found.records)
    return {"labels_dir": str(Path(labels_dir).resolve()), "images": len(per_image),
            "groups": {group: summary([per_image[i] for i in ids]) for group, ids in groups.items()},
            "per_image": [{"image_id": i, **row} for i, row in per_image.items()]}, kinds


def fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(payload: dict) -> str:
    """One markdown table per image kind, one row per tool."""
    import common

    headers = ["tool", "images", "true", "predicted", "matched", "missed: merged / outlined / not found",
               "extra: cell body or merge / fragment / background / other", "median IoU",
               "IoU >= " + " / ".join(map(str, IOU_LEVELS)), "area pred/true",
               "matched by true area, px: " + " / ".join(BAND_NAMES)]
    groups = list(dict.fromkeys(g for run in payload["runs"].values() for g in run["groups"]))
    text = [f"Errors by image kind: label images against {payload['val_json']}, matched one to one at IoU > 0.5 "
            "as the evaluator matches (`benchmarks/errors_by_kind.py --help` defines each column)"]
    for group in groups:
        rows = []
        for name, run in payload["runs"].items():
            r = run["groups"].get(group)
            if r is None:
                continue
            rows.append([name, r["images"], r["true"], r["predicted"], r["matched"],
                         f"{r['missed']}: " + " / ".join(str(r[k]) for k in MISSED),
                         f"{r['extra']}: " + " / ".join(str(r[k]) for k in EXTRA),
                         fmt(r["median_iou"], 3), " / ".join(fmt(v) for v in r["iou_at_least"].values()),
                         fmt(r["median_area_ratio"]),
                         " / ".join(f"{fmt(m / t if t else None)} of {t}" for m, t in r["matched_by_size"].values())])
        text += [f"#### {group}", common.markdown_table(headers, rows)]
    return "\n\n".join(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import common

        common.quiet()
        runs, kinds = {}, None
        for labels_dir, name in zip(args.labels_dirs, args.names):
            runs[name], kinds = tool_errors(labels_dir, name, args, kinds)
    except (LabelsError, OSError, ValueError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    payload = {"val_json": str(Path(args.val_json).resolve()), "iou_threshold": 0.5, "covers": COVERS, "runs": runs}
    markdown = table(payload)
    common.write_outputs(args.output_dir, "errors_by_kind", payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
