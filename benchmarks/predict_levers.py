#!/usr/bin/env python
"""Prediction speed levers, one after another, end to end through tools/predict.py, each with
its accuracy.

    python benchmarks/predict_levers.py --images DIR --val-json ann/val.json [--image-root STAGE_DIR] \
        --lever "float32=--exact --tile-size 1024" --lever "bfloat16=--tile-size 1024" ... \
        [--source float32=/path/to/an/older/checkout] [--output-dir DIR]

Each lever is NAME=FLAGS for tools/predict.py (``--objects --no-progress`` are always added, so
the objects' scores reach the scorer). ``--source NAME=TREE`` runs that lever from another
checkout of sharp_fpn (e.g. the code before the levers, from ``git worktree add``). The levers
run one at a time in the order given, each a whole process over the folder: reading, model
loading, prediction and writing included, as a user sees it. Per lever: wall seconds, seconds
per megapixel of the files, the ratio to the lever before and to the first, the peak resident
memory of its largest process, and the label images scored by benchmarks/peers/score.py (DSB
score, segm AP, F1@0.5, fg IoU) with the DSB difference to the first lever. Writes
predict_levers.json and .md; each lever's scores are a RUN_DIR for benchmarks/by_image.py.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common
import numpy as np

from sharp_fpn.data.image_io import load_image_array
from sharp_fpn.predict import expand_inputs

ROOT = Path(__file__).resolve().parents[1]


def named(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", nargs="+", required=True, help="files, folders or globs to predict")
    p.add_argument("--val-json", required=True, help="the converted JSON the images belong to, for the scores")
    p.add_argument("--image-root", help="its image folder (default: the one the converter recorded)")
    p.add_argument("--lever", type=named, action="append", required=True, metavar="NAME=FLAGS",
                   help="tools/predict.py flags of one step; repeat, in order")
    p.add_argument("--source", type=named, action="append", default=[], metavar="NAME=TREE",
                   help="run lever NAME from this sharp_fpn checkout instead of this one")
    p.add_argument("--output-dir", default="output/predict_levers", help="(default: %(default)s)")
    return p.parse_args(argv)


def run_predict(tree: Path, images, out: Path, flags: str) -> dict:
    """tools/predict.py of ``tree`` as its own process: wall seconds and its peak RSS."""
    cmd = [sys.executable, str(tree / "tools" / "predict.py"), *images, "--output-dir", str(out), "--objects",
           "--no-progress", *flags.split()]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{output[-2000:]}")
    # wait4's usage is this run's own: the largest of its process and the workers it waited for
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "output": output.strip()[-500:]}


def score(out: Path, args) -> dict:
    """benchmarks/peers/score.py on one lever's label images."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "peers" / "score.py"), str(out / "labels"), "--val-json",
           args.val_json, "--output-dir", str(out / "score"), "--only-predicted", "--name", out.name]
    if args.image_root:
        cmd += ["--image-root", args.image_root]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    payload = json.loads((out / "score" / "peer_score.json").read_text())
    per_image = json.loads(Path(payload["metrics_json"]).read_text())["per_image"]
    return {"groups": payload["groups"], "dsb_by_image": {row["image_id"]: row["dsb_score"] for row in per_image}}


def main(argv=None) -> int:
    args = parse_args(argv)
    common.quiet()
    files, problems = expand_inputs(args.images)
    if problems or not files:
        raise SystemExit(f"error: {problems[0] if problems else 'no images'}")
    megapixels = sum(int(np.prod(load_image_array(f).shape[:2])) for f in files) / 1e6
    sources = dict(args.source)
    unknown = set(sources) - {name for name, _ in args.lever}
    if unknown:
        raise SystemExit(f"error: --source names no lever: {', '.join(sorted(unknown))}")
    rows = []
    for name, flags in args.lever:
        out = Path(args.output_dir) / name
        tree = Path(sources.get(name, ROOT)).resolve()
        common.log(f"{name}: tools/predict.py {flags} ({tree})")
        row = {"lever": name, "flags": flags, "tree": str(tree), **run_predict(tree, [str(f) for f in files], out / "labels", flags)}
        row.update(score(out, args))
        rows.append(row)
        common.log(f"  {row['wall_s']:.1f} s, {row['wall_s'] / megapixels:.2f} s/MP, "
                   f"DSB {row['groups']['all']['nuclei']['dsb_score']:.4f}")
    first = rows[0]
    table = []
    for before, row in zip([None] + rows, rows):
        nuclei, segm = row["groups"]["all"]["nuclei"], row["groups"]["all"]["segm"]
        shared = sorted(set(row["dsb_by_image"]) & set(first["dsb_by_image"]))
        delta = np.mean([row["dsb_by_image"][i] - first["dsb_by_image"][i] for i in shared])
        table.append([row["lever"], f"`{row['flags']}`", f"{row['wall_s']:.1f}", f"{row['wall_s'] / megapixels:.2f}",
                      f"{row['wall_s'] / before['wall_s']:.2f}" if before else "-", f"{row['wall_s'] / first['wall_s']:.2f}",
                      f"{row['peak_rss_mib']:.0f}", f"{nuclei['dsb_score']:.4f}", f"{delta:+.4f}", f"{segm['AP']:.1f}",
                      f"{nuclei['f1@0.5']:.3f}", f"{nuclei['fg_iou']:.3f}"])
    info = common.machine_info("cpu")
    md = "\n".join([
        common.header("Prediction speed levers, end to end", info),
        f"{len(files)} images, {megapixels:.2f} MP of files; each lever a whole tools/predict.py process "
        "(model loading, reading and writing included), one after another.\n",
        common.markdown_table(["lever", "tools/predict.py flags", "wall s", "s / MP", "x previous", "x first",
                               "peak RSS (MiB)", "DSB", "DSB - first", "segm AP", "F1@0.5", "fg IoU"], table) + "\n",
    ])
    print(md)
    payload = {"args": vars(args), "machine": info, "images": len(files), "megapixels": megapixels, "levers": rows}
    common.write_outputs(args.output_dir, "predict_levers", payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
