"""Label images of a converter val JSON: which images have one, reading them, grouping by kind.

One copy of the input rules for the scripts that read a tool's ``<id>_labels.tif`` files
against the val JSON's ground truth (benchmarks/peers/score.py, benchmarks/errors_by_kind.py),
so that both score the same images and reject the same files with the same one-line errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

LABELS_SUFFIX = "_labels.tif"


class LabelsError(Exception):
    """A problem with the inputs, printed as one line."""


class LabelImages(NamedTuple):
    """The val JSON's images that have a label image in a folder."""

    records: list  # Detectron2 dicts of those images, with their annotations, in JSON order
    stems: dict  # image_id -> file stem, for every image of the JSON
    label_files: dict  # file stem -> <stem>_labels.tif, for every label image of the folder
    image_root: Path  # the folder the JSON's file_name are relative to


def find_label_images(labels_dir, val_json, image_root=None, only_predicted: bool = False,
                      dataset: str = "labels") -> LabelImages:
    """The images of ``val_json`` (registered as ``<dataset>_json``) that have a label image in
    ``labels_dir``; a missing one is an error unless ``only_predicted``. ``image_root`` defaults
    to the folder the converter recorded in the JSON, else the JSON's own folder."""
    from detectron2.data import DatasetCatalog

    from sharp_fpn.data.register import recorded_image_root, register_coco_nuclei

    labels_dir, val_json = Path(labels_dir), Path(val_json)
    if not labels_dir.is_dir():
        raise LabelsError(f"{labels_dir}: no such folder")
    if not val_json.is_file():
        raise LabelsError(f"{val_json}: no such file")
    image_root = Path(image_root) if image_root else recorded_image_root(val_json) or val_json.parent
    register_coco_nuclei(f"{dataset}_json", val_json, image_root)
    records = DatasetCatalog.get(f"{dataset}_json")
    label_files = {p.name[: -len(LABELS_SUFFIX)]: p for p in labels_dir.glob(f"*{LABELS_SUFFIX}")}
    stems = {r["image_id"]: Path(r["file_name"]).stem for r in records}
    missing = [stems[r["image_id"]] for r in records if stems[r["image_id"]] not in label_files]
    if missing and not only_predicted:
        raise LabelsError(f"{labels_dir}: no label image for {len(missing)} of the {len(records)} images of {val_json}, "
                          f"e.g. {missing[0]}{LABELS_SUFFIX} (--only-predicted scores the others)")
    records = [r for r in records if stems[r["image_id"]] in label_files]
    if not records:
        raise LabelsError(f"{labels_dir}: none of the images of {val_json} has a label image here")
    return LabelImages(records, stems, label_files, image_root)


def read_label_image(path: Path, height: int, width: int) -> np.ndarray:
    """A 2-D integer label image of the expected size (0 background, k > 0 object k)."""
    import tifffile

    try:
        labels = np.asarray(tifffile.imread(path))
    except Exception as error:  # tifffile raises several types for bad files
        raise LabelsError(f"{path}: cannot read a label TIFF ({error})") from None
    labels = np.squeeze(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise LabelsError(f"{path}: a label image must be 2-D integers, got {labels.dtype} {labels.shape}")
    if labels.shape != (height, width):
        raise LabelsError(f"{path}: {labels.shape[1]}x{labels.shape[0]} px, its image is {width}x{height}")
    if labels.min() < 0:
        raise LabelsError(f"{path}: negative labels")
    return labels


def groups_of(kinds: dict) -> dict:
    """Group name -> image ids: each stain, and each stain-and-size where a stain has two sizes."""
    groups: dict[str, list] = {}
    for image_id, kind in kinds.items():
        groups.setdefault(kind.split()[0], []).append(image_id)
    for stain in list(groups):
        sizes = {kinds[i] for i in groups[stain]}
        if len(sizes) > 1:
            for kind in sorted(sizes):
                groups[kind] = [i for i in groups[stain] if kinds[i] == kind]
    return dict(sorted(groups.items()))


def kind_groups(kinds: dict, records: list) -> dict:
    """"all" (the records' ids, in order) and then :func:`groups_of` the records' image kinds;
    ``kinds`` maps image_id -> kind for at least these records (benchmarks/by_image.kinds_of)."""
    ids = [r["image_id"] for r in records]
    kept = set(ids)
    return {"all": ids, **groups_of({i: k for i, k in kinds.items() if i in kept})}
