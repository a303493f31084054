"""Every output format, derived from one instance label image (and the objects' scores), so all
of them describe the same objects in the same (label) order.

Outlines trace pixel edges: a vertex (x, y) is a pixel corner, pixel (r, c) spans
[c, c + 1] x [r, r + 1]; so a polygon's area is the object's pixel count (holes included as
interior rings in GeoJSON; ImageJ ROIs hold the outer outline only). Table coordinates (centroid,
bbox) are pixel indices, as scikit-image gives them: the centre of pixel (r, c) is (r, c) there
and (c + 0.5, r + 0.5) in polygon coordinates.

Every file is written to a temporary file beside its destination and moved into place
(``os.replace``), so a file either is complete or is not there.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util
import tifffile
from scipy import ndimage
from skimage.segmentation import find_boundaries

from ..data.coco_export import NUCLEUS_CATEGORY, rle_to_json
from ..data.image_io import normalize_to_uint8
from ..data.kaggle_rle import kaggle_rle_encode
from .labels import TABLE_COLUMNS

# RGB of overlay outlines: green stands apart from white, grey, dark and H&E purple alike.
OUTLINE_COLOUR = (0, 255, 0)
HALO_FACTOR = 0.3  # the background pixels around each object are darkened to this fraction
QUPATH_OBJECT_TYPES = ("detection", "annotation")
CLASS_NAME = NUCLEUS_CATEGORY["name"]
CLASS_COLOUR = (255, 200, 0)


# -- atomic files ---------------------------------------------------------------------------

def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds,
    delete it if the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, _default_mode())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


# -- objects of a label image ---------------------------------------------------------------

def iter_objects(labels: np.ndarray) -> Iterator[tuple[int, tuple[slice, slice]]]:
    """(label, bounding slices) of each label present, in increasing label order."""
    for index, slices in enumerate(ndimage.find_objects(labels)):
        if slices is not None:
            yield index + 1, slices


def _ring_corners(contour: np.ndarray) -> np.ndarray:
    """A contour through the centres of a 2x-upsampled mask's border pixels -> the pixel
    corners of the original mask: upsampled index u lies in the quadrant of pixel u // 2 whose
    outer corner is (u + 1) // 2. Repeated and collinear vertices are dropped."""
    points = (contour.reshape(-1, 2) + 1) // 2
    points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]
    if len(points) < 3:
        return points
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - (points[:, 1] - before[:, 1]) * (after[:, 0] - points[:, 0])
    return points[cross != 0]


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of an open ring of (x, y) vertices; positive counter-clockwise in x-right,
    y-up axes."""
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2


def mask_outlines(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[list[np.ndarray]]:
    """Pixel-edge outlines of a boolean mask: one [exterior, hole, ...] list per 8-connected
    part, each ring an open (n, 2) int array of (x, y) corners shifted by ``offset`` (x, y).
    Exteriors have positive :func:`signed_area`, holes negative."""
    padded = np.pad(mask.astype(np.uint8), 1)
    upsampled = np.repeat(np.repeat(padded, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(upsampled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    shift = np.asarray(offset, dtype=np.int64) - 1  # undo the padding
    rings = [_ring_corners(c).astype(np.int64) + shift for c in contours]
    parents = hierarchy[0][:, 3]
    polygons = []
    for index in np.flatnonzero(parents == -1):
        exterior = rings[index]
        if signed_area(exterior) < 0:
            exterior = exterior[::-1]
        holes = [r if signed_area(r) < 0 else r[::-1] for r in (rings[j] for j in np.flatnonzero(parents == index))]
        polygons.append([exterior] + [h for h in holes if len(h) >= 3])
    return polygons


def object_outlines(labels: np.ndarray) -> Iterator[tuple[int, list[list[np.ndarray]]]]:
    """(label, :func:`mask_outlines` of that object in image coordinates), in label order."""
    for label, (rows, cols) in iter_objects(labels):
        yield label, mask_outlines(labels[rows, cols] == label, (cols.start, rows.start))


def object_runs(labels: np.ndarray, label: int, cols: slice) -> np.ndarray:
    """Kaggle run-length pairs (1-indexed start, length; column-major) of one object, from the
    full-height strip of columns that holds it (cheap, and exactly the whole-image encoding)."""
    height = labels.shape[0]
    values = np.array(kaggle_rle_encode(labels[:, cols] == label).split(), dtype=np.int64)
    values[0::2] += cols.start * height
    return values


def runs_to_coco_rle(values: np.ndarray, height: int, width: int) -> dict:
    """Kaggle run-length pairs -> compressed COCO RLE (alternating background/foreground
    counts, column-major)."""
    starts, lengths = values[0::2] - 1, values[1::2]
    ends = starts + lengths
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[0:-1:2] = starts - np.concatenate([[0], ends[:-1]])
    counts[1::2] = lengths
    counts[-1] = height * width - (ends[-1] if len(ends) else 0)
    return mask_util.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)


# -- formats ----------------------------------------------------------------------------------

def write_label_tiff(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """The label image as a zlib-compressed TIFF (uint16, or uint32 beyond 65,535 objects)."""
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, labels, compression="zlib", photometric="minisblack")
    return Path(path)


def display_image(image: np.ndarray) -> np.ndarray:
    """The image as an overlay shows it: stretched from its 0.5-99.5 percentiles to 0-255
    (jointly over channels, so colours keep their balance), so that a dim 8-bit fluorescence
    image is visible; 16-bit images arrive stretched already, by the reader."""
    if image.size == 0 or image.min() == image.max():
        return image.copy()
    return normalize_to_uint8(image)


def overlay_outlines(image: np.ndarray, labels: np.ndarray, colour: Sequence[int] = OUTLINE_COLOUR) -> np.ndarray:
    """HxWx3 RGB :func:`display_image` of ``image``, each object's inner border pixels painted
    ``colour`` and the background pixels just outside it darkened (a dark halo, so the outline
    shows on bright nuclei too)."""
    overlay = display_image(image)
    halo = find_boundaries(labels, mode="outer") & (labels == 0)
    overlay[halo] = (overlay[halo] * HALO_FACTOR).astype(np.uint8)
    overlay[find_boundaries(labels, mode="inner")] = colour
    return overlay


def write_overlay_png(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(overlay_outlines(image, labels), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    return write_bytes_atomic(path, encoded.tobytes())


def write_objects_csv(path: str | os.PathLike, table: Sequence[dict], image_name: str, source: str = "") -> Path:
    """Per-object CSV: ``image`` (the output name) and ``source`` (the input file) columns,
    then :data:`~.labels.TABLE_COLUMNS`; header only when there are no objects."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("image", "source") + TABLE_COLUMNS)
    for row in table:
        writer.writerow([image_name, source] + ["" if row[c] is None else row[c] for c in TABLE_COLUMNS])
    return write_text_atomic(path, text.getvalue())


def geojson_features(labels: np.ndarray, scores: np.ndarray, object_type: str = "detection") -> list[dict]:
    """QuPath-readable GeoJSON features, one per object in label order: a Polygon (a
    MultiPolygon if an object had several parts), ``objectType`` "detection" or "annotation",
    classification "nucleus", and the label and score as measurements."""
    if object_type not in QUPATH_OBJECT_TYPES:
        raise ValueError(f"objectType must be one of {QUPATH_OBJECT_TYPES}, got {object_type!r}")
    features = []
    for label, polygons in object_outlines(labels):
        closed = [[np.vstack([ring, ring[:1]]).tolist() for ring in polygon] for polygon in polygons]
        geometry = {"type": "Polygon", "coordinates": closed[0]} if len(closed) == 1 else {"type": "MultiPolygon", "coordinates": closed}
        features.append({
            "type": "Feature",
            "geometry": geometry,
            "properties": {
                "objectType": object_type,
                "name": f"nucleus {label}",
                "classification": {"name": CLASS_NAME, "color": list(CLASS_COLOUR)},
                "measurements": {"label": label, "score": float(scores[label - 1])},
            },
        })
    return features


def write_geojson(path: str | os.PathLike, labels: np.ndarray, scores: np.ndarray, object_type: str = "detection") -> Path:
    collection = {"type": "FeatureCollection", "features": geojson_features(labels, scores, object_type)}
    return write_text_atomic(path, json.dumps(collection, separators=(",", ":")))


def imagej_rois(labels: np.ndarray) -> list:
    """One ImageJ traced ROI per object, in label order, named by its zero-padded label so that
    ImageJ's ROI Manager lists them in label order; the outline of the object's largest part."""
    from roifile import ROI_TYPE, ImagejRoi

    width = max(4, len(str(int(labels.max())))) if labels.size else 4
    rois = []
    for label, polygons in object_outlines(labels):
        exterior = max((polygon[0] for polygon in polygons), key=signed_area)
        roi = ImagejRoi.frompoints(exterior.astype(np.int32), name=f"{label:0{width}d}")
        roi.roitype = ROI_TYPE.TRACED
        rois.append(roi)
    return rois


def write_imagej_zip(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """ImageJ/Fiji ROI set (open with the ROI Manager); an empty zip when there are no objects."""
    from roifile import roiwrite

    rois = imagej_rois(labels)
    with atomic_path(path) as temporary:
        roiwrite(temporary, rois, mode="w")
    return Path(path)


def kaggle_rows(image_id: str, labels: np.ndarray) -> list[tuple[str, str]]:
    """(ImageId, EncodedPixels) per object in label order; one row with empty EncodedPixels when
    there is no object, as Kaggle's submission format lists every image."""
    rows = [(image_id, " ".join(map(str, object_runs(labels, label, cols).tolist()))) for label, (_, cols) in iter_objects(labels)]
    return rows or [(image_id, "")]


def write_kaggle_csv(path: str | os.PathLike, rows: Sequence[tuple[str, str]]) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("ImageId", "EncodedPixels"))
    writer.writerows(rows)
    return write_text_atomic(path, text.getvalue())


def coco_results(image_id: int, labels: np.ndarray, scores: np.ndarray, file_name: str = "") -> list[dict]:
    """COCO results entries (compressed RLE segmentation, bbox, score), one per object in label
    order, with two extra keys COCO's ``loadRes`` ignores: ``label`` and ``file_name``."""
    height, width = labels.shape
    results = []
    for label, (_, cols) in iter_objects(labels):
        rle = runs_to_coco_rle(object_runs(labels, label, cols), height, width)
        results.append({
            "image_id": int(image_id),
            "category_id": NUCLEUS_CATEGORY["id"],
            "segmentation": rle_to_json(rle),
            "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "area": float(mask_util.area(rle)),
            "score": float(scores[label - 1]),
            "label": label,
            "file_name": file_name,
        })
    return results


def write_coco_json(path: str | os.PathLike, results: Sequence[dict]) -> Path:
    return write_text_atomic(path, json.dumps(list(results), separators=(",", ":")))
