#!/usr/bin/env python
"""Convert a Kaggle DSB 2018 stage folder into COCO instance JSON for Detectron2.

    python datasets/prepare_dsb2018.py datasets/dsb2018/stage1_train \
        --output-dir datasets/dsb2018/annotations/stage1_train

writes train.json and val.json (see datasets/README.md). The work is done by
sharp_fpn.data.convert_dsb2018; this is its command line.
"""
import argparse
import sys

from tqdm import tqdm

from sharp_fpn.data.coco_export import convert_dsb2018
from sharp_fpn.data.issues import DatasetError


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "stage_dir",
        help="stage folder holding <id>/images/<id>.png and <id>/masks/*.png; "
        "file_name in the JSON is relative to it (register it as the image root)",
    )
    parser.add_argument("--output-dir", required=True, help="where train.json and val.json go (created if missing)")
    split = parser.add_mutually_exclusive_group()
    split.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.1,
        help="share of images for val.json (default 0.1); 0 writes only train.json, 1 only val.json",
    )
    split.add_argument("--val-ids", help="text file of image ids, one a line, that form val.json instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the deterministic split (default 0)")
    parser.add_argument(
        "--polygons", action="store_true", help="write polygons instead of compressed RLE (default RLE, lossless)"
    )
    parser.add_argument(
        "--labels-csv",
        help="take masks from this Kaggle run-length CSV (stage1_train_labels.csv, stage1_solution.csv) "
        "instead of the masks/ folders",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first data problem instead of warning")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPUs, at most 8)")
    parser.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = convert_dsb2018(
            args.stage_dir,
            args.output_dir,
            val_fraction=args.val_fraction,
            seed=args.seed,
            val_ids=args.val_ids,
            polygons=args.polygons,
            labels_csv=args.labels_csv,
            strict=args.strict,
            workers=args.workers,
            progress=None,
            on_issue=lambda issue: tqdm.write(f"warning: {issue}", file=sys.stderr),
        )
    except (DatasetError, OSError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
