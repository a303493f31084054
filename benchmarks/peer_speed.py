#!/usr/bin/env python
"""CPU prediction speed of sharp_fpn and its peers in one run: the same images, cores and threads.

    python benchmarks/peer_speed.py --val-json ann/val.json [--image-root STAGE_DIR]
        [--stardist-model DIR] [--cellpose-model DIR] [--weights W [--config C] | --model nuclei]
        [--peer-envs ~/peer_envs] [--threads 1] [--limit N] [--output-dir benchmarks/results]

One tool at a time, one after the other: each peer's ``predict`` command runs in its own
environment (benchmarks/peers/setup.sh) with ``--threads``, and writes its predict_timings.json;
sharp_fpn's NucleiPredictor runs in this process with as many torch threads. Every tool times
the same thing: an image already read, to its label image (the disk is not timed), after one
untimed warm-up on the first image, once per image. The table gives seconds per megapixel of
the files: the sum of the seconds over the sum of the megapixels. Writes peer_speed.json and .md;
the label images are left in --labels-dir (default: a temporary folder) for benchmarks/peers/score.py.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

from sharp_fpn.data.image_io import load_image_array
from sharp_fpn.predict import NucleiPredictor, SetupError
from sharp_fpn.predict.pretrained import DEFAULT_MODEL

PEERS_DIR = Path(__file__).resolve().parent / "peers"
sys.path.insert(0, str(PEERS_DIR))
import peer_common  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--val-json", required=True, help="the converter's val.json: its images are timed")
    p.add_argument("--image-root", help="folder its file_name are relative to (default: the recorded one)")
    p.add_argument("--limit", type=int, help="only its first N images")
    p.add_argument("--stardist-model", help="a model folder of stardist_peer.py train (default: StarDist not timed)")
    p.add_argument("--cellpose-model", help="a model folder of cellpose_peer.py train (default: Cellpose not timed)")
    ours = p.add_mutually_exclusive_group()
    ours.add_argument("--model", help=f"a shipped sharp_fpn model by name (default: {DEFAULT_MODEL}, unless --weights)")
    ours.add_argument("--weights", help="a sharp_fpn checkpoint instead")
    ours.add_argument("--no-sharp-fpn", action="store_true", help="time the peers only")
    p.add_argument("--config", help="with --weights: its config (default: config.yaml beside it)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="sharp_fpn's score threshold (default 0.5)")
    p.add_argument("--peer-envs", default=os.environ.get("PEER_ENVS", str(Path.home() / "peer_envs")),
                   help="folder of the peers' environments, <peer>/bin/python (default: $PEER_ENVS or ~/peer_envs)")
    p.add_argument("--threads", type=int, default=1, help="threads of every tool (default 1)")
    p.add_argument("--labels-dir", help="where each tool's label images go, in <tool>/ (default: a temporary folder)")
    p.add_argument("--output-dir", default=str(Path(__file__).resolve().parent / "results"),
                   help="where peer_speed.json and .md go (default benchmarks/results)")
    return p.parse_args(argv)


def run_peer(peer: str, model_dir: str, args, labels_dir: Path) -> dict:
    """The peer's predict command in its own environment; its predict_timings.json."""
    python = Path(args.peer_envs) / peer / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"error: {python}: no {peer} environment (benchmarks/peers/setup.sh {peer})")
    command = [str(python), str(PEERS_DIR / f"{peer}_peer.py"), "predict", "--coco-json", args.val_json,
               "--model-dir", model_dir, "--output-dir", str(labels_dir), "--threads", str(args.threads)]
    command += ["--image-root", args.image_root] if args.image_root else []
    command += ["--limit", str(args.limit)] if args.limit else []
    common.log(f"{peer}: {' '.join(command)}")
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"error: {peer} predict failed (its message is above)")
    return json.loads((labels_dir / peer_common.TIMINGS_NAME).read_text())


def run_sharp_fpn(args, files, labels_dir: Path) -> dict:
    """NucleiPredictor on the same images, timed as the peers time themselves."""
    from sharp_fpn.predict.writers import write_label_tiff, write_objects_csv

    common.set_threads(args.threads)
    options = dict(device="cpu", score_threshold=args.score_threshold)
    try:
        if args.weights:
            predictor = NucleiPredictor(args.config or str(Path(args.weights).parent / "config.yaml"), args.weights, **options)
        else:
            predictor = NucleiPredictor.from_pretrained(args.model or DEFAULT_MODEL, **options)
    except SetupError as error:
        raise SystemExit(f"error: {error}")
    timings = peer_common.Timings("sharp_fpn", {"weights": args.weights or args.model or DEFAULT_MODEL}, args.threads, [])
    for index, file in enumerate(files):
        array = load_image_array(file)
        if index == 0:
            predictor.predict(array)  # warm-up
        started = time.perf_counter()
        prediction = predictor.predict(array)
        timings.add(file.stem, array.shape, time.perf_counter() - started, prediction.num_objects)
        write_label_tiff(labels_dir / f"{file.stem}{peer_common.LABELS_SUFFIX}", prediction.labels)
        write_objects_csv(labels_dir / f"{file.stem}{peer_common.OBJECTS_SUFFIX}", prediction.table, file.stem, str(file))
    return timings.payload()


def main(argv=None) -> int:
    args = parse_args(argv)
    common.quiet()
    files = [path for _, path in peer_common.coco_image_paths(args.val_json, args.image_root)][: args.limit or None]
    labels_root = Path(args.labels_dir or tempfile.mkdtemp(prefix="peer_speed_"))
    results = {}
    for peer, model_dir in (("stardist", args.stardist_model), ("cellpose", args.cellpose_model)):
        if model_dir:
            results[peer] = run_peer(peer, model_dir, args, labels_root / peer)
    if not args.no_sharp_fpn:
        results["sharp_fpn"] = run_sharp_fpn(args, files, labels_root / "sharp_fpn")
    if not results:
        raise SystemExit("error: nothing to time (give --stardist-model, --cellpose-model, or leave sharp_fpn in)")

    info = common.machine_info()
    rows = [[tool, r["images"], f"{r['megapixels']:.2f}", f"{r['seconds']:.1f}", f"{r['s_per_megapixel']:.2f}", r["threads"],
             ", ".join(f"{k} {v}" for k, v in r["versions"].items())] for tool, r in results.items()]
    markdown = (common.header("Prediction speed of sharp_fpn and its peers", info)
                + f"\n{len(files)} images of {args.val_json}; an image in memory to its label image, after one warm-up; "
                  f"{args.threads} thread(s) each, one tool at a time.\n\n"
                + common.markdown_table(["tool", "images", "MP", "seconds", "s / MP", "threads", "versions"], rows))
    common.write_outputs(args.output_dir, "peer_speed", {"machine": info, "labels_dir": str(labels_root), "tools": results},
                         markdown)
    print(markdown)
    print(f"label images in {labels_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
