#!/usr/bin/env python
"""Predict nuclei with the model shipped with sharp_fpn, or with one you trained.

    python tools/predict.py IMAGES... [--output-dir predictions] [--all]
    python tools/predict.py IMAGES... --model NAME
    python tools/predict.py IMAGES... --weights output/x/model_final.pth [--config CONFIG] [--opts KEY VALUE ...]

IMAGES are files, folders (their PNG/TIFF/JPEG files) or quoted globs ("data/**/*.tif").
Without --weights the shipped model predicts. Per image it writes <name>_labels.tif (instance
labels) and <name>_overlay.png (outlines), and the optional outputs listed below. Exit status:
0 if every image was predicted, 1 if some input failed (each named on one line), 2 for a
problem with the model, the config or an option.
"""
import argparse
import logging
import sys
import traceback
from pathlib import Path

from tqdm import tqdm

from sharp_fpn.predict import NucleiPredictor, OutputFormats, SetupError, expand_inputs, predict_files
from sharp_fpn.predict.batch import COCO_RESULTS_NAME, KAGGLE_CSV_NAME, coco_image_ids, output_names, renamed
from sharp_fpn.predict.predictor import DEFAULT_SCORE_THRESHOLD, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE
from sharp_fpn.predict.pretrained import DEFAULT_MODEL, SHIPPED_MODELS


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


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or globs (PNG/TIFF/JPEG; grey, RGB or RGBA; 8 or 16 bit)")
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


def build_predictor(args) -> NucleiPredictor:
    """The shipped model (--model, or the default without --weights), or --weights/--config."""
    options = dict(device=args.device, score_threshold=args.score_threshold, opts=args.opts, tile_size=args.tile_size,
                   tile_overlap=args.tile_overlap, scale=args.scale, tta=args.tta or None)
    if args.weights:
        return NucleiPredictor(args.config or default_config(args.weights), args.weights, **options)
    if args.config:
        raise SetupError("--config goes with --weights; a shipped model brings its own config")
    return NucleiPredictor.from_pretrained(args.model or DEFAULT_MODEL, **options)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # torch.fx's "is_fx_tracing" notice, raised inside Detectron2 at each start
        logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

    def fail(message: str) -> None:
        tqdm.write(f"error: {message}", file=sys.stderr)

    files, problems = expand_inputs(args.inputs)
    for problem in problems:
        fail(problem)
    if not files:  # nothing to predict: load no model, make no output folder
        return 1
    try:
        image_ids = coco_image_ids(files, args.coco_json) if args.coco_json else None
        predictor = build_predictor(args)
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
    for file, name in renamed(files, output_names(files)):
        print(f"{file} -> {name}_* (another input is also named {file.stem})")

    def on_error(path, error, message):
        if args.verbose:
            tqdm.write("".join(traceback.format_exception(error)), file=sys.stderr)
        fail(message)

    result = predict_files(
        predictor, files, args.output_dir, formats,
        progress=lambda items: tqdm(items, desc="images", unit="image", disable=args.no_progress),
        tile_progress=lambda tiles, name: tqdm(tiles, desc=name, unit="tile", leave=False, disable=args.no_progress),
        on_error=on_error, image_ids=image_ids,
    )
    output_dir = Path(args.output_dir)
    print(f"{result.images} image(s), {result.objects} nuclei; {len(result.written)} files in {output_dir}/")
    for path in result.written:
        if path.parent == output_dir and path.name in (COCO_RESULTS_NAME, KAGGLE_CSV_NAME):
            print(f"  {path}")
    failed = len(result.failures) + len(problems)
    if failed:
        print(f"{failed} input(s) failed (see the error lines above)", file=sys.stderr)
    return 1 if failed or not files else 0


if __name__ == "__main__":
    sys.exit(main())
