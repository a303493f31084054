"""Convert a Dsb2018 stage folder into COCO instance JSON (train.json, val.json).

Segmentation is compressed COCO RLE by default: lossless, where polygons of 3-10 px nuclei are
not unless traced along pixel edges (which :func:`mask_to_polygons` does). Images are read in a
process pool, since decoding ~26k mask PNGs dominates the run time.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import pycocotools.mask as mask_util
from tqdm import tqdm

from .dsb2018 import Dsb2018Sample, ImageRecord, find_samples, read_labels_csv, read_sample
from .issues import DatasetError, Issue
from .split import read_id_list, split_ids

NUCLEUS_CATEGORY = {"id": 1, "name": "nucleus", "supercategory": "nucleus"}
# Below this many images, starting worker processes costs more than it saves.
MIN_IMAGES_FOR_POOL = 16


def rle_to_json(rle: dict) -> dict:
    """pycocotools' compressed RLE with ``counts`` as str, as JSON needs."""
    counts = rle["counts"]
    return {"size": [int(s) for s in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def encode_mask(mask: np.ndarray) -> dict:
    """A binary HxW mask as JSON-ready compressed COCO RLE."""
    return rle_to_json(mask_util.encode(np.asfortranarray(mask, dtype=np.uint8)))


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons that rasterise back to exactly ``mask`` (holes excepted, which COCO
    polygons cannot express).

    COCO rasterises polygons in pixel-corner coordinates, so contours through pixel centres
    (plain ``cv2.findContours``) lose half a pixel all round, a third of a 5 px nucleus. Tracing
    the 2x-upsampled mask and mapping its contour back puts every vertex on a pixel edge.
    """
    upsampled = cv2.resize(np.ascontiguousarray(mask, dtype=np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [((contour.reshape(-1, 2) + 0.5) / 2).ravel().tolist() for contour in contours]


def annotation_from_rle(rle: dict, polygons: bool = False) -> dict:
    """Segmentation, area and bbox ([x, y, w, h], pixel-inclusive) of one nucleus; ids are set
    by the caller once the whole dataset is known."""
    segmentation = mask_to_polygons(mask_util.decode(rle)) if polygons else rle_to_json(rle)
    return {
        "category_id": NUCLEUS_CATEGORY["id"],
        "segmentation": segmentation,
        "area": float(mask_util.area(rle)),
        "bbox": [float(v) for v in mask_util.toBbox(rle)],
        "iscrowd": 0,
    }


def _convert_sample(sample: Dsb2018Sample, polygons: bool) -> tuple[ImageRecord, list[dict]]:
    """Worker: read one image and build its annotations. The record travels back without its
    masks, which the annotations now hold."""
    record = read_sample(sample)
    annotations = [annotation_from_rle(instance.rle, polygons) for instance in record.instances]
    return dataclasses.replace(record, instances=[]), annotations


def _map_samples(samples: list[Dsb2018Sample], polygons: bool, workers: int) -> Iterator[tuple[ImageRecord, list[dict]]]:
    """Results in input order, from a pool of ``workers`` processes when that pays."""
    convert = functools.partial(_convert_sample, polygons=polygons)
    if workers <= 1 or len(samples) < MIN_IMAGES_FOR_POOL:
        yield from map(convert, samples)
        return
    # fork, not spawn: a spawned worker would re-import torch and Detectron2 (seconds each).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        yield from pool.map(convert, samples, chunksize=max(1, min(16, len(samples) // (4 * workers))))
    finally:
        # When the caller stops early (--strict), drop the queued images rather than read them.
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class ConversionSummary:
    """What a conversion produced: per part ("train", "val") its JSON path and counts."""

    stage_dir: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    nuclei: dict[str, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    removed_stale: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def issue_counts(self) -> Counter:
        return Counter(issue.kind for issue in self.issues)

    def __str__(self) -> str:
        parts = ", ".join(f"{part} {self.images[part]:,} images / {self.nuclei[part]:,} nuclei" for part in self.outputs)
        counts = self.issue_counts()
        warnings = ", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items())) or "none"
        lines = [
            f"{self.stage_dir}: {sum(self.images.values()):,} images, {sum(self.nuclei.values()):,} nuclei "
            f"in {self.seconds:.1f} s ({parts})",
            f"warnings: {warnings}",
        ]
        lines += [f"removed stale {path}" for path in self.removed_stale]
        lines += [f"wrote {path}" for path in self.outputs.values()]
        return "\n".join(lines)


def default_workers() -> int:
    """Processes for decoding: the CPUs this process may use, at most 8."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def convert_dsb2018(
    stage_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    val_ids: str | os.PathLike | Iterable[str] | None = None,
    polygons: bool = False,
    labels_csv: str | os.PathLike | None = None,
    strict: bool = False,
    workers: int | None = None,
    progress: bool | None = False,
    on_issue: Callable[[Issue], None] | None = None,
) -> ConversionSummary:
    """Write ``output_dir``/train.json and val.json (each only if its part is not empty).

    Args:
        stage_dir: a Dsb2018 stage folder (``<id>/images/<id>.png``); ``file_name`` in the JSON
            is relative to it, and the JSON records it (``info.image_root``, relative to
            ``output_dir``) as the default image root of :func:`~.register.register_coco_nuclei`.
        val_fraction, seed: deterministic split, see :func:`~.split.split_ids`; 1.0 puts
            everything in val.json (e.g. stage1_test with its solution CSV as evaluation set).
        val_ids: a file (one id a line) or ids that form the validation part instead.
        polygons: polygons instead of compressed RLE.
        labels_csv: take masks from this Kaggle run-length CSV instead of ``masks/``.
        strict: raise :class:`DatasetError` on the first problem instead of warning.
        workers: decoding processes (default :func:`default_workers`).
        progress: show a tqdm progress bar (None: only on a terminal).
        on_issue: called with each problem as it is found (e.g. to print it).

    Raises DatasetError (one line naming the file) when nothing usable is found, or with
    ``strict`` on any problem; nothing is written then. Each JSON is written to a temporary file
    in ``output_dir`` and renamed, so a reader never sees half a file.
    """
    started = time.perf_counter()
    stage_dir, output_dir = Path(stage_dir), Path(output_dir)
    summary = ConversionSummary(stage_dir)

    def report(issue: Issue) -> None:
        if strict:
            raise DatasetError.from_issue(issue)
        summary.issues.append(issue)
        if on_issue is not None:
            on_issue(issue)

    labels = read_labels_csv(labels_csv) if labels_csv is not None else None
    if isinstance(val_ids, (str, os.PathLike)):
        val_ids_source, val_ids = str(val_ids), read_id_list(val_ids)
    else:
        val_ids_source = "val_ids"
    samples, scan_issues = find_samples(stage_dir, labels)
    for issue in scan_issues:
        report(issue)

    images, annotations, kaggle_ids = [], [], []
    results = _map_samples(samples, polygons, workers or default_workers())
    for record, image_annotations in tqdm(results, total=len(samples), desc="images", unit="img", disable=None if progress is None else not progress):
        for issue in record.issues:
            report(issue)
        if not image_annotations:
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": record.file_name, "height": record.height, "width": record.width})
        kaggle_ids.append(record.image_id)
        for annotation in image_annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    if not images:
        raise DatasetError(f"{stage_dir}: no usable images ({len(summary.issues)} warnings)")

    if val_ids is not None:
        val_set = set(val_ids)
        for unknown in sorted(val_set - set(kaggle_ids)):
            report(Issue("unknown_image", val_ids_source, f"no usable image {unknown}"))
    else:
        val_set = set(split_ids(kaggle_ids, val_fraction, seed)[1])

    datasets = {}
    for part in ("train", "val"):
        part_image_ids = {image["id"] for image, kaggle_id in zip(images, kaggle_ids) if (kaggle_id in val_set) == (part == "val")}
        if not part_image_ids:
            continue
        part_images = [image for image in images if image["id"] in part_image_ids]
        part_annotations = [a for a in annotations if a["image_id"] in part_image_ids]
        path = output_dir / f"{part}.json"
        datasets[path] = _coco_dataset(part_images, part_annotations, stage_dir, output_dir, part)
        summary.outputs[part] = path
        summary.images[part], summary.nuclei[part] = len(part_images), len(part_annotations)

    write_json_files_atomic(datasets)
    for part in ("train", "val"):
        stale = output_dir / f"{part}.json"
        if part not in summary.outputs and stale.exists():
            stale.unlink()  # an old split's file would overlap the new one
            summary.removed_stale.append(stale)
    summary.seconds = time.perf_counter() - started
    return summary


def _coco_dataset(images: list[dict], annotations: list[dict], stage_dir: Path, output_dir: Path, part: str) -> dict:
    return {
        # pycocotools' loadRes copies "info"; some versions fail without it. "image_root" is the
        # folder file_name are relative to, seen from the JSON's folder, so that training finds
        # the images without being told (register.recorded_image_root reads it).
        "info": {
            "description": f"Dsb2018 {stage_dir.name} ({part}), converted by sharp_fpn",
            "version": "1.0",
            "image_root": _relative_to(stage_dir, output_dir),
        },
        "licenses": [],
        "categories": [NUCLEUS_CATEGORY],
        "images": images,
        "annotations": annotations,
    }


def _relative_to(folder: Path, start: Path) -> str:
    """``folder`` as seen from ``start`` (so the pair can move together), or absolute where no
    relative path exists (another drive)."""
    try:
        return Path(os.path.relpath(folder.resolve(), start.resolve())).as_posix()
    except ValueError:
        return folder.resolve().as_posix()


def write_json_files_atomic(contents: dict[Path, object]) -> None:
    """Write every file to a temporary sibling first and rename only when all are complete, so
    neither a crash nor a full disk leaves a partial JSON (or a train.json without its val.json)."""
    temporaries = {}
    try:
        for path, data in contents.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporaries[path] = temporary
            with os.fdopen(handle, "w") as stream:
                json.dump(data, stream, separators=(",", ":"))
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            if os.path.exists(temporary):
                os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
