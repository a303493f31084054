#!/usr/bin/env python
"""Predict nuclei with a trained sharp_fpn Mask R-CNN.

    python tools/predict.py IMAGES... --weights output/x/model_final.pth [--config CONFIG]
        [--output-dir predictions] [--all] [--opts KEY VALUE ...]

IMAGES are files, folders (their PNG/TIFF/JPEG files) or quoted globs ("data/**/*.tif").
Per image it writes <name>_labels.tif (instance labels) and <name>_overlay.png (outlines), and
on request the tables and exchange formats (see --help). Exit status: 0 if every image was
predicted, 1 if some input failed (each named on one line), 2 for a config/weights problem.
"""
import argparse
import logging
import sys
import traceback
from pathlib import Path

from tqdm import tqdm

from sharp_fpn.predict import NucleiPredictor, OutputFormats, SetupError, expand_inputs, predict_files
from sharp_fpn.predict.batch import COCO_RESULTS_NAME, KAGGLE_CSV_NAME
from sharp_fpn.predict.predictor import DEFAULT_SCORE_THRESHOLD, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or globs (PNG/TIFF/JPEG; grey, RGB or RGBA; 8 or 16 bit)")
    parser.add_argument("--weights", required=True, help="local checkpoint, e.g. output/mask_rcnn_sharp_R50/model_final.pth")
    parser.add_argument("--config", help="yaml path or shipped config name (e.g. mask_rcnn_sharp_R50); "
                        "default: config.yaml beside the weights, as training writes it")
    parser.add_argument("--output-dir", default="predictions", help="folder for the outputs (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD, help="drop detections scoring below this (default: %(default)s)")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                        help="images larger than this (model input pixels) are predicted in tiles; 0: never tile (default: %(default)s)")
    parser.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP,
                        help="overlap of neighbouring tiles; make it larger than the largest nucleus (default: %(default)s)")
    parser.add_argument("--scale", default="auto",
                        help="file pixels to model input: 'auto' (the config's test resize, never shrinking) or a factor (default: %(default)s)")
    formats = parser.add_argument_group("optional outputs (label TIFF and overlay PNG are always written)")
    formats.add_argument("--objects", action="store_true", help="<name>_objects.csv: label, score, area, centroid, bbox, mean intensity")
    formats.add_argument("--geojson", action="store_true", help="<name>.geojson for QuPath (File > Import objects)")
    formats.add_argument("--geojson-object-type", choices=("detection", "annotation"), default="detection", help="QuPath object type (default: %(default)s)")
    formats.add_argument("--imagej", action="store_true", help="<name>_rois.zip for ImageJ/Fiji's ROI Manager")
    formats.add_argument("--coco", action="store_true", help="coco_results.json for the whole batch (COCO RLE)")
    formats.add_argument("--kaggle", action="store_true", help="submission.csv for the whole batch (Kaggle DSB 2018 run-length)")
    formats.add_argument("--all", action="store_true", help="every optional output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="log details and show tracebacks")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, last on the line: --opts MODEL.ROI_HEADS.NMS_THRESH_TEST 0.3")
    return parser


def default_config(weights: str) -> str:
    beside = Path(weights).parent / "config.yaml"
    if not beside.is_file():
        raise SetupError(f"no --config given and no config.yaml beside {weights}")
    return str(beside)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # torch.fx's "is_fx_tracing" notice, raised inside Detectron2 at each start
        logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

    def fail(message: str) -> None:
        tqdm.write(f"error: {message}", file=sys.stderr)

    try:
        scale = args.scale if args.scale == "auto" else float(args.scale)
        predictor = NucleiPredictor(
            args.config or default_config(args.weights), args.weights, device=args.device,
            score_threshold=args.score_threshold, opts=args.opts, tile_size=args.tile_size,
            tile_overlap=args.tile_overlap, scale=scale,
        )
    except (SetupError, ValueError) as error:
        if args.verbose:
            traceback.print_exc()
        fail(str(error))
        return 2

    files, problems = expand_inputs(args.inputs)
    for problem in problems:
        fail(problem)
    if args.all:
        formats = OutputFormats.everything(args.geojson_object_type)
    else:
        formats = OutputFormats(args.objects, args.geojson, args.imagej, args.coco, args.kaggle, args.geojson_object_type)

    def on_error(path, error, message):
        if args.verbose:
            tqdm.write("".join(traceback.format_exception(error)), file=sys.stderr)
        fail(message)

    result = predict_files(
        predictor, files, args.output_dir, formats,
        progress=lambda items: tqdm(items, desc="images", unit="image", disable=args.no_progress),
        tile_progress=lambda tiles, name: tqdm(tiles, desc=name, unit="tile", leave=False, disable=args.no_progress),
        on_error=on_error,
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
