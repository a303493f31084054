#!/usr/bin/env python
"""Predict nuclei with the model shipped with sharp_fpn, or with one you trained.

    python tools/predict.py IMAGES... [--output-dir predictions] [--all]
    python tools/predict.py IMAGES... --model NAME
    python tools/predict.py IMAGES... --weights output/x/model_final.pth [--config CONFIG] [--opts KEY VALUE ...]
    python tools/predict.py IMAGES... --shard K/N --output-dir OUT    (on each of N machines)
    python tools/predict.py --merge OUT                               (once all N have finished)

IMAGES are files, folders (their PNG/TIFF/JPEG files) or quoted globs ("data/**/*.tif").
Without --weights the shipped model predicts. Per image it writes <name>_labels.tif (instance
labels) and <name>_overlay.png (outlines), and the optional outputs listed below. Images are
predicted in parallel, one worker process per core (--workers). Exit status: 0 if every image
was predicted, 1 if some input failed (each named on one line), 2 for a problem with the model,
the config or an option.

Many machines (docs/many_machines.md): --shard K/N (or RANK and WORLD_SIZE from the environment,
as torchrun sets them) predicts every N-th file of the input list from the K-th (K from 0),
writing the per-image files and part files of coco_results.json and submission.csv into the
shared --output-dir; --merge joins the parts into the files one process would have written.
"""
import argparse
import functools
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import traceback
from pathlib import Path


def start_worker_server(argv) -> None:
    """Start the server that forks the --workers now, before this process imports torch and
    Detectron2, so that its own import of them (about 3 s) runs on another core beside this
    one's instead of after it. A guess from the command line: a run that ends up in one process
    (--workers auto on a small input) leaves the server idle, and sharp_fpn.predict.batch still
    decides how workers start."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if ("forkserver" not in multiprocessing.get_all_start_methods() or cores < 2
            or "--merge" in argv or any(a in ("--workers=1", "--workers=0") for a in argv)
            or any(a == "--workers" and b in ("0", "1") for a, b in zip(argv, argv[1:]))):
        return
    multiprocessing.forkserver.set_forkserver_preload(["sharp_fpn.predict.batch"])
    multiprocessing.forkserver.ensure_running()


if __name__ == "__main__":
    start_worker_server(sys.argv[1:])

# The imports below take seconds; the worker server (above) starts first.
from tqdm import tqdm  # noqa: E402

from sharp_fpn.predict import NucleiPredictor, OutputFormats, SetupError, expand_inputs, predict_files  # noqa: E402
from sharp_fpn.predict.batch import (COCO_RESULTS_NAME, KAGGLE_CSV_NAME, auto_workers, coco_image_ids,  # noqa: E402
                                     merge_shards, output_names, parse_shard, renamed, shard_from_environment)
from sharp_fpn.predict.predictor import DEFAULT_SCORE_THRESHOLD, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE  # noqa: E402
from sharp_fpn.predict.pretrained import DEFAULT_MODEL, SHIPPED_MODELS  # noqa: E402


def scale_option(text: str):
    """--scale: 'auto' or a positive number (argparse names the option in its error)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a positive number")
    return value


def shard_option(text: str):
    """--shard: K/N with K from 0 to N-1 (argparse names the option in its error)."""
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def workers_option(text: str):
    """--workers: 'auto' or a whole number from 1."""
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text if text == "auto" else int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a whole number from 1")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="IMAGE", help="image files, folders or globs (PNG/TIFF/JPEG; grey, RGB or RGBA; 8 or 16 bit)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", help=f"a model shipped with sharp_fpn, by name: {', '.join(SHIPPED_MODELS)} "
                       f"(default: {DEFAULT_MODEL}, unless --weights is given)")
    model.add_argument("--weights", help="your own trained checkpoint instead, e.g. output/mask_rcnn_sharp_R50/model_final.pth")
    parser.add_argument("--config", help="with --weights: yaml path or config name from configs/ (e.g. mask_rcnn_sharp_R50); "
                        "default: config.yaml beside the weights, as training writes it")
    parser.add_argument("--output-dir", default="predictions", help="folder for the outputs (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD, help="drop detections scoring below this (default: %(default)s)")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                        help="images larger than this (model input pixels) are predicted in tiles; 0: never tile (default: %(default)s)")
    parser.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP,
                        help="overlap of neighbouring tiles; make it larger than the largest nucleus (default: %(default)s)")
    parser.add_argument("--tta", action="store_true", help="test-time flips: average the model over the image's "
                        "mirror images (2-4 views; several times slower)")
    parser.add_argument("--scale", default="auto", type=scale_option,
                        help="file pixels to model input: 'auto' (the config's test-time scale rule) or a factor (default: %(default)s)")
    parser.add_argument("--exact", action="store_true", help="the exact float32 path, as the model was evaluated, "
                        "instead of the faster default")
    parser.add_argument("--workers", default="auto", type=workers_option,
                        help="processes predicting images side by side, each with its own model and cores/workers torch "
                        "threads; 'auto': one per core on CPU when the inputs add up to 16 megapixels or more (below that, starting "
                        "workers costs more than they save), else 1; 1: one at a time "
                        "(default: %(default)s)")
    many = parser.add_argument_group("many machines (docs/many_machines.md)")
    many.add_argument("--shard", type=shard_option, metavar="K/N",
                      help="predict every N-th file of the input list from the K-th (K from 0 to N-1; default: RANK/"
                      "WORLD_SIZE when both are set, as under torchrun, else every file); writes part files of "
                      "coco_results.json and submission.csv for --merge")
    many.add_argument("--merge", metavar="OUTPUT_DIR", help="instead of predicting: join the part files that the "
                      "shards wrote into OUTPUT_DIR into coco_results.json and submission.csv, then delete the parts")
    formats = parser.add_argument_group("optional outputs (label TIFF and overlay PNG are always written)")
    formats.add_argument("--objects", action="store_true", help="<name>_objects.csv: output name, source file, label, score, area, centroid, bbox, mean intensity")
    formats.add_argument("--geojson", action="store_true", help="<name>.geojson for QuPath (File > Import objects)")
    formats.add_argument("--geojson-object-type", choices=("detection", "annotation"), default="detection", help="QuPath object type (default: %(default)s)")
    formats.add_argument("--imagej", action="store_true", help="<name>_rois.zip for ImageJ/Fiji's ROI Manager")
    formats.add_argument("--coco", action="store_true", help="coco_results.json for the whole batch (COCO RLE; "
                         "image_id: the position of the image in the input list, from 1, unless --coco-json is given)")
    formats.add_argument("--coco-json", metavar="JSON", help="with coco_results.json (implied): take each image's id from "
                         "this COCO JSON, e.g. the converter's val.json, matched by file name, so the results score against it")
    formats.add_argument("--kaggle", action="store_true", help="submission.csv for the whole batch (Kaggle DSB 2018 run-length)")
    formats.add_argument("--all", action="store_true", help="every optional output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="log details and show tracebacks")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, last on the line: --opts MODEL.ROI_HEADS.NMS_THRESH_TEST 0.3")
    return parser


def default_config(weights: str) -> str:
    if not Path(weights).is_file():
        raise SetupError(f"weights {weights}: no such file")
    beside = Path(weights).parent / "config.yaml"
    if not beside.is_file():
        raise SetupError(f"no --config given and no config.yaml beside {weights}")
    return str(beside)


def predictor_factory(args):
    """A picklable function that builds the predictor, so that each worker process builds its
    own: the shipped model (--model, or the default without --weights), or --weights/--config."""
    options = dict(device=args.device, score_threshold=args.score_threshold, opts=args.opts, tile_size=args.tile_size,
                   tile_overlap=args.tile_overlap, scale=args.scale, tta=args.tta or None)
    if args.exact:
        options["exact"] = True
    if args.weights:
        return functools.partial(NucleiPredictor, args.config or default_config(args.weights), args.weights, **options)
    if args.config:
        raise SetupError("--config goes with --weights; a shipped model brings its own config")
    return functools.partial(NucleiPredictor.from_pretrained, args.model or DEFAULT_MODEL, **options)


def build_predictor(args) -> NucleiPredictor:
    return predictor_factory(args)()


def merge(output_dir: str) -> int:
    try:
        result = merge_shards(output_dir)
    except SetupError as error:
        tqdm.write(f"error: {error}", file=sys.stderr)
        return 2
    print(f"merged {result.shards} shard(s): {result.images} image(s), {result.objects} nuclei")
    for path in result.written:
        print(f"  {path}")
    if result.failures:
        print(f"{len(result.failures)} input(s) failed in the shards (their error lines name them)", file=sys.stderr)
    return 1 if result.failures else 0


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.merge and args.inputs:
        parser.error("--merge joins what the shards wrote; give it no images")
    if not args.merge and not args.inputs:
        parser.error("give the images to predict (files, folders or globs)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # torch.fx's "is_fx_tracing" notice, raised inside Detectron2 at each start
        logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

    def fail(message: str) -> None:
        tqdm.write(f"error: {message}", file=sys.stderr)

    if args.merge:
        return merge(args.merge)
    try:
        shard = args.shard or shard_from_environment()
    except ValueError as error:
        fail(f"RANK/WORLD_SIZE: {error}")
        return 2
    files, problems = expand_inputs(args.inputs)
    for problem in problems:
        fail(problem)
    if not files:  # nothing to predict: load no model, make no output folder
        return 1
    try:
        image_ids = coco_image_ids(files, args.coco_json) if args.coco_json else None
        make_predictor = predictor_factory(args)
        predictor = make_predictor()  # here first: a problem with the model is one line before any worker starts
    except (SetupError, ValueError) as error:
        if args.verbose:
            traceback.print_exc()
        fail(str(error))
        return 2
    if args.all:
        formats = OutputFormats.everything(args.geojson_object_type)
    else:
        formats = OutputFormats(args.objects, args.geojson, args.imagej, args.coco or bool(args.coco_json),
                                args.kaggle, args.geojson_object_type)
    mine = files if shard is None else files[shard[0]::shard[1]]
    for file, name in renamed(files, output_names(files)):
        if file in mine:
            print(f"{file} -> {name}_* (another input is also named {file.stem})")
    workers = args.workers
    if workers == "auto":
        workers = auto_workers(mine) if predictor.cfg.MODEL.DEVICE == "cpu" else 1
    if workers > 1 and len(mine) > 1:
        del predictor  # each worker builds its own
        predictor = make_predictor

    def on_error(path, error, message):
        if args.verbose:
            tqdm.write("".join(traceback.format_exception(error)), file=sys.stderr)
        fail(message)

    try:
        result = predict_files(
            predictor, files, args.output_dir, formats,
            progress=lambda items: tqdm(items, desc="images", unit="image", disable=args.no_progress),
            tile_progress=lambda tiles, name: tqdm(tiles, desc=name, unit="tile", leave=False, disable=args.no_progress),
            on_error=on_error, image_ids=image_ids, workers=workers, shard=shard,
        )
    except KeyboardInterrupt:
        if args.verbose:
            raise
        fail(f"interrupted; the files in {args.output_dir} are complete, the batch-level ones not written")
        return 130
    output_dir = Path(args.output_dir)
    where = "" if shard is None else f"shard {shard[0]}/{shard[1]}: "
    print(f"{where}{result.images} image(s), {result.objects} nuclei; {len(result.written)} files in {output_dir}/")
    if shard is not None:
        print(f"when all {shard[1]} shards are done: python tools/predict.py --merge {output_dir}")
    for path in result.written:
        if path.parent == output_dir and path.name in (COCO_RESULTS_NAME, KAGGLE_CSV_NAME):
            print(f"  {path}")
    failed = len(result.failures) + len(problems)
    if failed:
        print(f"{failed} input(s) failed (see the error lines above)", file=sys.stderr)
    return 1 if failed or not files else 0


if __name__ == "__main__":
    sys.exit(main())
