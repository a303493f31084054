#!/usr/bin/env python
"""Check the Dsb2018 converter on a real stage folder: counts, time, warnings by kind, and that
every annotation decodes to exactly its mask PNG.

    python benchmarks/check_converter.py ../shared/data/dsb2018/stage1_train [--polygons]

The conversion runs through the library (as datasets/prepare_dsb2018.py does); the check reads
every mask again with OpenCV, independently of the converter's reader.
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from scipy.ndimage import binary_fill_holes
from tqdm import tqdm

from sharp_fpn.data.coco_export import convert_dsb2018, default_workers


def decode(segmentation, height, width):
    if isinstance(segmentation, list):  # polygons
        segmentation = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    return mask_util.decode(segmentation).astype(bool)


def check(stage_dir: Path, dataset: dict, holes: list[str]) -> list[str]:
    """Problems found: an image whose annotation count differs from its mask files, or an
    annotation that differs from its file (annotations follow the sorted mask file names).
    Polygons cannot express holes: a polygon equal to its mask with the holes filled is listed
    in ``holes`` instead."""
    problems = []
    annotations_of = {}
    for annotation in dataset["annotations"]:
        annotations_of.setdefault(annotation["image_id"], []).append(annotation)
    for image in tqdm(dataset["images"], desc="checking", unit="img"):
        mask_paths = sorted((stage_dir / image["file_name"]).parent.parent.glob("masks/*.png"))
        annotations = annotations_of.get(image["id"], [])
        if len(annotations) != len(mask_paths):
            problems.append(f"{image['file_name']}: {len(annotations)} annotations, {len(mask_paths)} mask files")
            continue
        for annotation, path in zip(annotations, mask_paths):
            png = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0
            decoded = decode(annotation["segmentation"], image["height"], image["width"])
            if annotation["area"] != png.sum():
                problems.append(f"{path}: area {annotation['area']} != {png.sum()}")
            elif np.array_equal(decoded, png):
                continue
            elif isinstance(annotation["segmentation"], list) and np.array_equal(decoded, binary_fill_holes(png)):
                holes.append(f"{path}: {int(decoded.sum() - png.sum())} px of holes filled")
            else:
                problems.append(f"{path}: decoded annotation {annotation['id']} differs")
    return problems


def cpu_seconds() -> float:
    """CPU time of this process and its finished workers: unlike wall time, it does not depend
    on what else the machine is running."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage_dir", type=Path, help="Dsb2018 stage folder, e.g. stage1_train")
    parser.add_argument("--output-dir", type=Path, help="where the JSON goes (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="decoding processes")
    parser.add_argument("--polygons", action="store_true", help="convert and check polygons instead of RLE")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        output_dir = args.output_dir or Path(temporary)
        started, started_cpu = time.perf_counter(), cpu_seconds()
        summary = convert_dsb2018(
            args.stage_dir, output_dir, val_fraction=0.1, polygons=args.polygons, workers=args.workers, progress=True
        )
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - started_cpu
        print(summary)
        print(f"conversion: {seconds:.1f} s wall, {cpu:.1f} s CPU, {args.workers} worker process(es)")
        for kind, count in sorted(Counter(issue.kind for issue in summary.issues).items()):
            print(f"  {kind}: {count}")
        for issue in summary.issues:
            print(f"    {issue}")
        problems, holes = [], []
        for path in summary.outputs.values():
            problems += check(args.stage_dir, json.loads(path.read_text()), holes)
    checked = sum(summary.nuclei.values())
    if holes:
        print(f"{len(holes)} masks with holes, which polygons fill:", *holes, sep="\n  ")
    if problems:
        print(f"{len(problems)} problems in {checked:,} annotations:", *problems[:20], sep="\n  ")
        return 1
    exact = checked - len(holes)
    print(f"{exact:,} of {checked:,} annotations equal their mask PNGs exactly" + (", the rest but for holes" if holes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
