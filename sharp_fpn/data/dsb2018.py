"""Reader for the Kaggle Data Science Bowl 2018 layout (BBBC038):
``<stage>/<id>/images/<id>.png`` plus one 0/255 PNG per nucleus in ``<stage>/<id>/masks/``, or
the masks as Kaggle run-length rows of a labels CSV (``stage1_train_labels.csv``, or
``stage1_solution.csv`` with Height, Width and Usage columns for stage1_test).

Each mask becomes a compressed COCO RLE right away: a 1000x1000 image with 375 nuclei would
otherwise hold 375 MB of masks. Problems are reported as :class:`~.issues.Issue` and the
offending file skipped, so one bad file does not stop a 600-image conversion.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .image_io import IMAGE_EXTENSIONS, load_image_array
from .issues import DatasetError, Issue
from .kaggle_rle import kaggle_rle_decode

# Rows of the stage 2 solution marked this way were decoys, not scored.
IGNORED_USAGE = "Ignored"


@dataclass(frozen=True)
class CsvMask:
    """One labels-CSV row: a nucleus as Kaggle run-length text, with the size it was encoded
    for when the CSV says so (``stage1_solution.csv`` does, ``stage1_train_labels.csv`` not)."""

    encoded_pixels: str
    csv_path: str
    line: int
    height: int | None = None
    width: int | None = None


@dataclass(frozen=True)
class Dsb2018Sample:
    """Where one image and its masks are; small, so it travels cheaply to worker processes."""

    image_id: str
    image_path: Path
    file_name: str  # image path relative to the stage folder, with "/" separators
    mask_paths: tuple[Path, ...] = ()
    csv_masks: tuple[CsvMask, ...] = ()


@dataclass
class Instance:
    """One nucleus: where it came from and its mask as compressed COCO RLE."""

    source: str
    rle: dict


@dataclass
class ImageRecord:
    """One image as read; ``height`` is None when the image itself could not be read."""

    image_id: str
    file_name: str
    height: int | None = None
    width: int | None = None
    instances: list[Instance] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def read_labels_csv(csv_path: str | os.PathLike) -> dict[str, list[CsvMask]]:
    """Group a Kaggle labels CSV (ImageId, EncodedPixels[, Height, Width, Usage]) by image.

    Rows whose Usage is "Ignored" are dropped. A CSV without the two Kaggle columns, or with
    Height/Width that are not integers, raises DatasetError naming the file (and line).
    """
    csv_path = Path(csv_path)
    try:
        handle = open(csv_path, newline="")
    except OSError as error:
        raise DatasetError(f"{csv_path}: cannot open labels CSV ({error.strerror})") from None
    labels: dict[str, list[CsvMask]] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = {"ImageId", "EncodedPixels"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{csv_path}: not a Kaggle labels CSV, no column {sorted(missing)}")
        has_size = {"Height", "Width"} <= set(reader.fieldnames)
        for row in reader:
            if row.get("Usage") == IGNORED_USAGE:
                continue
            try:
                size = (int(row["Height"]), int(row["Width"])) if has_size else (None, None)
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{csv_path}: line {reader.line_num}: Height/Width are not integers"
                ) from None
            labels.setdefault(row["ImageId"].strip(), []).append(
                CsvMask((row["EncodedPixels"] or "").strip(), str(csv_path), reader.line_num, *size)
            )
    return labels


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _find_image(images_dir: Path, image_id: str) -> Path | None:
    """``<id>.<ext>`` if present (Kaggle's naming), else the first image file by name."""
    candidates = sorted(p for p in images_dir.iterdir() if _is_image_file(p))
    for path in candidates:
        if path.stem == image_id:
            return path
    return candidates[0] if candidates else None


def find_samples(
    stage_dir: str | os.PathLike, labels: dict[str, list[CsvMask]] | None = None
) -> tuple[list[Dsb2018Sample], list[Issue]]:
    """List the sample folders of a stage directory, sorted by id, with their mask sources.

    With ``labels`` (from :func:`read_labels_csv`) masks come from the CSV and ``masks/`` folders
    are ignored. Folders that cannot give an annotated image are reported and left out.
    """
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        raise DatasetError(f"{stage_dir}: no such directory")
    folders = sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{stage_dir}: no sample folders (expected <id>/images/<id>.png)")
    if not any((folder / "images").is_dir() for folder in folders):
        raise DatasetError(f"{stage_dir}: no <id>/images/ folders in it{_where_samples_are(stage_dir, folders)}")
    samples, issues = [], []
    for folder in folders:
        image_id = folder.name
        images_dir = folder / "images"
        if not images_dir.is_dir():
            issues.append(Issue("missing_images_folder", str(folder), "no images/ folder"))
            continue
        image_path = _find_image(images_dir, image_id)
        if image_path is None:
            issues.append(Issue("missing_image", str(images_dir), "no image file"))
            continue
        file_name = image_path.relative_to(stage_dir).as_posix()
        if labels is not None:
            csv_masks = tuple(labels.get(image_id, ()))
            if not csv_masks:
                issues.append(Issue("no_masks", str(image_path), "no rows in the labels CSV"))
                continue
            samples.append(Dsb2018Sample(image_id, image_path, file_name, csv_masks=csv_masks))
            continue
        masks_dir = folder / "masks"
        mask_paths = tuple(sorted(p for p in masks_dir.iterdir() if _is_image_file(p))) if masks_dir.is_dir() else ()
        if not mask_paths:
            issues.append(Issue("no_masks", str(folder), "no masks/ folder or no mask files in it"))
            continue
        samples.append(Dsb2018Sample(image_id, image_path, file_name, mask_paths=mask_paths))
    if labels is not None:
        known = {folder.name for folder in folders}
        for image_id in sorted(set(labels) - known):
            first = labels[image_id][0]
            issues.append(
                Issue("unknown_image", first.csv_path, f"line {first.line}: no folder for ImageId {image_id}")
            )
    return samples, issues


def _where_samples_are(stage_dir: Path, folders: list[Path]) -> str:
    """A hint for a stage folder given one level off: the subfolders that hold sample folders
    (one level too high), or the parent when this is a sample folder itself (one too deep)."""
    if (stage_dir / "images").is_dir():
        return f"; it is one sample folder, convert its parent {stage_dir.parent}"
    holders = [f for f in folders if any((child / "images").is_dir() for child in f.iterdir() if child.is_dir())]
    if len(holders) == 1:
        return f"; its subfolder {holders[0]} holds them, convert that"
    if holders:
        return f"; its subfolders {', '.join(map(str, holders))} hold them, convert one of those"
    return ""


# File signatures, to tell a file that is not an image from a damaged one.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _unreadable_cause(path: Path, error: Exception) -> str:
    """Why a file could not be decoded, in words: OpenCV only says that it failed."""
    message = str(error).removeprefix(f"{path}: ")
    try:
        data = path.read_bytes()
    except OSError:
        return message
    if not data:
        return "empty file (0 bytes)"
    kind = next((kind for signature, kind in _SIGNATURES.items() if data.startswith(signature)), None)
    if kind is None:
        return f"not a PNG, JPEG or TIFF file (it starts with {data[:8]!r})"
    if kind == "PNG" and b"IEND" not in data[-12:]:
        return f"truncated PNG ({len(data):,} bytes, no end chunk)"
    return f"{message} (a damaged {kind} file of {len(data):,} bytes)"


def _encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a boolean HxW mask.

    pycocotools wants Fortran-ordered uint8. The transpose of a C-ordered array is Fortran-ordered,
    and cv2.transpose makes that copy ten times faster than np.asfortranarray (which alone took
    a third of the conversion time).
    """
    mask = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    if not mask.flags.f_contiguous:
        mask = cv2.transpose(np.ascontiguousarray(mask)).T
    return mask_util.encode(mask)


@dataclass(frozen=True)
class _MaskSource:
    """Where one mask comes from: a mask file, or a line of a labels CSV."""

    path: str
    line: int | None = None
    image_id: str = ""

    @property
    def where(self) -> str:
        """Prefix that locates the mask inside its file, for messages."""
        return f"line {self.line} (image {self.image_id}): " if self.line is not None else ""

    @property
    def name(self) -> str:
        """How other messages refer to this mask."""
        return f"{self.path}:{self.line}" if self.line is not None else self.path


def _mask_from_png(path: Path, image_shape: tuple[int, int], issues: list[Issue]) -> np.ndarray | None:
    """The foreground of one mask file, or None (with an issue recorded) when unusable."""
    try:
        array = load_image_array(path)
    except (OSError, ValueError, cv2.error) as error:  # OpenCV raises its own error on a 0-byte file
        issues.append(Issue("unreadable_file", str(path), f"cannot read mask: {_unreadable_cause(path, error)}"))
        return None
    if array.ndim == 3:  # colour masks: foreground in any colour channel, never in alpha
        array = array[..., : 3 if array.shape[2] >= 3 else 1].max(axis=2)
    if array.shape != image_shape:
        issues.append(Issue("size_mismatch", str(path), f"mask is {_size(array.shape)}, image is {_size(image_shape)}"))
        return None
    foreground = array > 0
    highest = array.max()
    if np.count_nonzero(array == highest) != np.count_nonzero(foreground) and highest > 0:
        lowest = array[foreground].min()
        message = f"foreground values {lowest}..{highest}; every pixel > 0 taken as nucleus"
        issues.append(Issue("non_binary_mask", str(path), message))
    return foreground


def _mask_from_csv(
    label: CsvMask, source: _MaskSource, image_shape: tuple[int, int], issues: list[Issue]
) -> np.ndarray | None:
    """The mask of one CSV row, or None (with an issue recorded) when unusable."""
    shape = image_shape if label.height is None else (label.height, label.width)
    if shape != image_shape:
        message = f"{source.where}mask is {_size(shape)}, image is {_size(image_shape)}"
        issues.append(Issue("size_mismatch", source.path, message))
        return None
    try:
        return kaggle_rle_decode(label.encoded_pixels, *shape).astype(bool)
    except ValueError as error:
        issues.append(Issue("bad_rle", source.path, f"{source.where}{error}"))
        return None


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _read_masks(sample: Dsb2018Sample, image_shape: tuple[int, int], issues: list[Issue]):
    """Yield (source, foreground) for every mask of a sample that could be decoded."""
    for path in sample.mask_paths:
        mask = _mask_from_png(path, image_shape, issues)
        if mask is not None:
            yield _MaskSource(str(path)), mask
    for label in sample.csv_masks:
        source = _MaskSource(label.csv_path, label.line, sample.image_id)
        mask = _mask_from_csv(label, source, image_shape, issues)
        if mask is not None:
            yield source, mask


def read_sample(sample: Dsb2018Sample) -> ImageRecord:
    """Read one image's size and masks, reporting and skipping every unusable mask."""
    record = ImageRecord(sample.image_id, sample.file_name)
    try:
        image = load_image_array(sample.image_path)
    except (OSError, ValueError, cv2.error) as error:  # OpenCV raises its own error on a 0-byte file
        reason = _unreadable_cause(sample.image_path, error)
        record.issues.append(Issue("unreadable_file", str(sample.image_path), f"cannot read image: {reason}"))
        return record
    record.height, record.width = image.shape[:2]

    first_source_of = {}  # compressed RLE is canonical: equal counts mean equal masks
    for source, mask in _read_masks(sample, (record.height, record.width), record.issues):
        if not mask.any():
            record.issues.append(Issue("empty_mask", source.path, f"{source.where}mask has no foreground pixels"))
            continue
        rle = _encode(mask)
        if rle["counts"] in first_source_of:
            message = f"{source.where}same mask as {first_source_of[rle['counts']]}; skipped"
            record.issues.append(Issue("duplicate_mask", source.path, message))
            continue
        first_source_of[rle["counts"]] = source.name
        record.instances.append(Instance(source.name, rle))
    record.issues.extend(_overlap_issues(record.instances))
    return record


def _overlap_issues(instances: list[Instance]) -> list[Issue]:
    """One issue per pair of masks sharing pixels. pycocotools' IoU skips pairs whose boxes are
    disjoint, so this costs little even with hundreds of nuclei."""
    if len(instances) < 2:
        return []
    rles = [instance.rle for instance in instances]
    ious = mask_util.iou(rles, rles, [0] * len(rles))
    issues = []
    for first, second in zip(*np.nonzero(np.triu(ious, k=1) > 0)):
        shared = int(mask_util.area(mask_util.merge([rles[first], rles[second]], intersect=True)))
        issues.append(
            Issue(
                "overlapping_masks",
                instances[second].source,
                f"shares {shared} px with {instances[first].source}; both kept",
            )
        )
    return issues
