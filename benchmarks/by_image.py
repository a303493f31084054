#!/usr/bin/env python
"""Per-image analysis of finished runs: scores by image kind, and paired differences.

    python benchmarks/by_image.py RUN_DIR [RUN_DIR ...] --val-json ann/val.json \
        --image-root STAGE_DIR [--baseline RUN_DIR] [--output-dir out/by_image]

A RUN_DIR is a training output folder holding ``inference/<dataset>/metrics.json`` (the
evaluator's per-image detail), or such a metrics.json itself (score_thresholds.py writes one
per threshold). Each run gets its DSB score and foreground IoU per image kind
(:mod:`sharp_fpn.data.kinds`: fluorescence, brightfield or tissue, small or large). With
``--baseline``, each other run also gets the mean per-image DSB difference against it, with a
bootstrap 95% interval over images (paired: the same images in both) and the number of images
on which it is better, overall and per kind.

For each run whose rows carry their TP/FP/FN at IoU 0.5 (metrics.json written since the evaluator
added them), F1@0.5 joins both (paired only when the baseline has them too): per kind pooled as the evaluator pools it, 2TP/(2TP+FP+FN) over
the kind's images, so "all" is the run's own f1@0.5; paired, each image's own F1 (1 when it has
no nuclei and no predictions). Older files still give the DSB and IoU tables.
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

import common
from sharp_fpn.data.image_io import read_image
from sharp_fpn.data.kinds import image_kind
from sharp_fpn.evaluation.evaluator import PER_IMAGE_COUNTS
from sharp_fpn.evaluation.metrics import ratio


def per_image(run_dir: Path) -> dict:
    """image_id -> the evaluator's per-image row, from the run's one metrics.json."""
    found = [Path(run_dir)] if Path(run_dir).is_file() else sorted(Path(run_dir).glob("inference/*/metrics.json"))
    if len(found) != 1:
        raise SystemExit(f"error: {run_dir}: expected one inference/*/metrics.json, found {len(found)}")
    return {row["image_id"]: row for row in json.loads(found[0].read_text())["per_image"]}


def kinds_of(val_json: str, image_root: str) -> dict:
    """image_id -> kind, read off each image's pixels."""
    images = json.loads(Path(val_json).read_text())["images"]
    return {im["id"]: image_kind(read_image(Path(image_root) / im["file_name"], "RGB")) for im in images}


def paired_interval(differences: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple:
    """Mean of paired differences and its percentile bootstrap 95% interval."""
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(axis=1)
    return float(differences.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def f1(rows: list) -> float:
    """F1@0.5 of TP/FP/FN summed over rows: one row is that image's F1, all rows the pooled F1."""
    tp, fp, fn = (sum(row[key] for row in rows) for key in PER_IMAGE_COUNTS)
    return ratio(2 * tp, 2 * tp + fp + fn)


def paired(runs: dict, names: list, baseline: str, members: dict, score, key: str, payload: dict) -> str:
    """A markdown table of each named run's paired per-image ``score(row)`` difference against the
    baseline, per group; the numbers also go to payload[name][group][key]."""
    groups = list(members)
    lines = ["| run - baseline | " + " | ".join(groups) + " |", "|---" * (1 + len(groups)) + "|"]
    for name in names:
        cells = []
        for g in groups:
            diff = np.array([score(runs[name][i]) - score(runs[baseline][i]) for i in members[g]])
            mean, low, high = paired_interval(diff)
            payload[name][g][key] = {"mean": mean, "ci95": [low, high], "better": int((diff > 0).sum()),
                                     "worse": int((diff < 0).sum())}
            cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] ({(diff > 0).sum()}/{len(diff)} better)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="training output folders")
    p.add_argument("--val-json", required=True, help="the converted JSON the runs were evaluated on")
    p.add_argument("--image-root", required=True, help="the folder its file_name are relative to")
    p.add_argument("--baseline", help="a run to compare every other run with, image by image")
    p.add_argument("--output-dir", default="output/by_image", help="(default: %(default)s)")
    args = p.parse_args(argv)
    kinds = kinds_of(args.val_json, args.image_root)
    groups = ["all"] + sorted(set(kinds.values()))
    members = {g: [i for i in kinds if g == "all" or kinds[i] == g] for g in groups}
    runs = {str(r): per_image(Path(r)) for r in args.runs + ([args.baseline] if args.baseline else [])}
    for name, rows in runs.items():
        if set(rows) != set(kinds):
            raise SystemExit(f"error: {name}: its images are not those of {args.val_json}")

    lacking = [name for name, rows in runs.items() if any(set(PER_IMAGE_COUNTS) - set(r) for r in rows.values())]
    payload = defaultdict(dict)
    lines = ["| run | " + " | ".join(f"{g} ({len(members[g])})" for g in groups) + " |", "|---" * (1 + len(groups)) + "|"]
    for name, rows in runs.items():
        cells = []
        for g in groups:
            dsb = float(np.mean([rows[i]["dsb_score"] for i in members[g]]))
            iou = float(np.mean([rows[i]["fg_iou"] for i in members[g]]))
            payload[name][g] = {"dsb_score": dsb, "fg_iou": iou}
            cells.append(f"{dsb:.3f} / {iou:.3f}")
            if name not in lacking:
                payload[name][g]["f1@0.5"] = f1([rows[i] for i in members[g]])
                cells[-1] += f" / {payload[name][g]['f1@0.5']:.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    what = "DSB score / foreground IoU (per-image means)" + (" / F1@0.5 (pooled) where counted" if len(lacking) < len(runs) else "")
    table = f"{what} by image kind (images):\n\n" + "\n".join(lines)

    if args.baseline:
        base, legend = str(args.baseline), "mean [bootstrap 95% interval] (images better)"
        names = list(map(str, args.runs))
        diffs = paired(runs, names, base, members, lambda row: row["dsb_score"], "paired_dsb", payload)
        table += f"\n\nPaired per-image DSB difference against {base}: {legend}:\n\n{diffs}"
        counted = [name for name in names if name not in lacking]
        if counted and base not in lacking:
            diffs = paired(runs, counted, base, members, lambda row: f1([row]), "paired_f1", payload)
            table += f"\n\nPaired per-image F1@0.5 difference against {base}: {legend}:\n\n{diffs}"
    if lacking:
        table += ("\n\nF1@0.5 needs per-image counts (metrics.json written since the evaluator added "
                  f"{'/'.join(PER_IMAGE_COUNTS)}); without them: {', '.join(lacking)}")
    common.write_outputs(args.output_dir, "by_image", dict(payload), table)
    print(table)


if __name__ == "__main__":
    main()
