"""Prediction over many files: expand inputs, predict each image, write its outputs, and keep
going past bad files (each failure is one line naming the file)."""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional, Sequence

from ..data.image_io import IMAGE_EXTENSIONS
from . import writers
from .predictor import NucleiPredictor, SetupError

COCO_RESULTS_NAME = "coco_results.json"
KAGGLE_CSV_NAME = "submission.csv"


@dataclass
class OutputFormats:
    """Which optional outputs to write; the label TIFF and the overlay PNG are always written.

    Per image: ``<name>_labels.tif``, ``<name>_overlay.png``, and on request
    ``<name>_objects.csv``, ``<name>.geojson``, ``<name>_rois.zip``. Per batch, on request:
    ``coco_results.json`` (image_id: the id of the same file name in a given COCO JSON, see
    :func:`coco_image_ids`, else the position of the image in the input list, from 1) and
    ``submission.csv`` (Kaggle, ImageId = the output name).
    """

    objects_csv: bool = False
    geojson: bool = False
    imagej: bool = False
    coco: bool = False
    kaggle: bool = False
    geojson_object_type: str = "detection"

    @classmethod
    def everything(cls, geojson_object_type: str = "detection") -> "OutputFormats":
        return cls(True, True, True, True, True, geojson_object_type)


@dataclass
class BatchResult:
    images: int = 0
    objects: int = 0
    objects_per_image: dict[str, int] = field(default_factory=dict)  # by output name
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their image files, not recursive) and globs (``**`` recurses; a matched
    folder gives its image files) -> image files in order, without repeats, and one message per
    input that gave nothing."""
    files, problems, seen = [], [], set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = _images_in(path)
            if not found:
                problems.append(f"{item}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in this folder")
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = []
            for match in sorted(Path(p) for p in glob.glob(item, recursive=True)):
                found += _images_in(match) if match.is_dir() else [match] if _is_image(match) else []
            if not found:
                problems.append(f"{item}: no image file matches this pattern")
        else:
            found = []
            problems.append(f"{item}: no such file or folder")
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files, problems


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def output_names(files: Sequence[Path]) -> list[str]:
    """File stems, made unique with "-2", "-3", ... where two inputs share a stem."""
    names, used = [], set()
    for file in files:
        name, n = file.stem, 1
        while name in used:
            n += 1
            name = f"{file.stem}-{n}"
        used.add(name)
        names.append(name)
    return names


def renamed(files: Sequence[Path], names: Sequence[str]) -> list[tuple[Path, str]]:
    """(input, output name) of the inputs whose outputs are not named after their own stem."""
    return [(file, name) for file, name in zip(files, names) if name != file.stem]


def coco_image_ids(files: Sequence[Path], coco_json: str | Path) -> list[int]:
    """The ids of ``files`` in a COCO JSON (e.g. the converter's val.json), so that
    coco_results.json scores against it. Files match images by file name; where the JSON has
    several images of one name, by the whole relative ``file_name`` at the end of the path.
    A file the JSON lacks is a SetupError naming both."""
    path = Path(coco_json)
    try:
        images = json.loads(path.read_text())["images"]
        by_name: dict[str, list[dict]] = {}
        for image in images:
            by_name.setdefault(PurePosixPath(image["file_name"]).name, []).append(image)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SetupError(f"--coco-json {path}: cannot read the images of a COCO JSON ({type(error).__name__}: {error})") from None
    ids = []
    for file in files:
        candidates = by_name.get(file.name, [])
        if len(candidates) > 1:
            whole = file.resolve().as_posix()
            candidates = [c for c in candidates if whole.endswith("/" + c["file_name"].lstrip("/"))]
        if len(candidates) != 1:
            problem = "no image of this file name" if file.name not in by_name else "several images of this file name"
            raise SetupError(f"{file}: {problem} in {path} (images are matched by file name)")
        ids.append(int(candidates[0]["id"]))
    return ids


def one_line(error: BaseException, path: Path) -> str:
    """``path: problem`` on one line, whatever the exception says."""
    text = " ".join(str(error).split())
    if not isinstance(error, (OSError, ValueError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if str(path) in text else f"{path}: {text}"


def predict_files(
    predictor: NucleiPredictor,
    files: Sequence[Path],
    output_dir: str | Path,
    formats: Optional[OutputFormats] = None,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
    tile_progress: Optional[Callable[[Iterable, str], Iterable]] = None,
    on_error: Callable[[Path, BaseException, str], None] = lambda path, error, message: None,
    image_ids: Optional[Sequence[int]] = None,
) -> BatchResult:
    """Predict every file and write its outputs to ``output_dir``.

    A file that cannot be read or predicted is skipped: ``on_error(path, error, message)`` is
    called with a one-line message and the message is kept in ``BatchResult.failures``.
    ``progress`` wraps the list of (image id, file, name); ``tile_progress(tiles, name)`` the
    tiles of a tiled image. ``image_ids``: the COCO image id of each file (default 1, 2, ...).
    The output folder is made with the first file written: an empty batch leaves nothing.
    """
    formats = formats or OutputFormats()
    output_dir = Path(output_dir)
    result = BatchResult()
    coco, kaggle = [], []
    names = output_names(files)
    image_ids = list(image_ids) if image_ids is not None else list(range(1, len(files) + 1))
    if len(image_ids) != len(files):
        raise ValueError(f"{len(image_ids)} image ids for {len(files)} files")
    for index, file, name in progress(list(zip(image_ids, files, names))):
        tiles = (lambda items, name=name: tile_progress(items, name)) if tile_progress else None
        try:
            prediction = predictor.predict(file, progress=tiles)
            result.written += write_image_outputs(prediction, output_dir, name, formats)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # a bad file must not stop the batch
            message = one_line(error, file)
            result.failures.append(message)
            on_error(file, error, message)
            continue
        result.images += 1
        result.objects += prediction.num_objects
        result.objects_per_image[name] = prediction.num_objects
        if formats.coco:
            coco += writers.coco_results(index, prediction.labels, prediction.scores, file.name)
        if formats.kaggle:
            kaggle += writers.kaggle_rows(name, prediction.labels)
    if formats.coco and result.images:
        result.written.append(writers.write_coco_json(output_dir / COCO_RESULTS_NAME, coco))
    if formats.kaggle and result.images:
        result.written.append(writers.write_kaggle_csv(output_dir / KAGGLE_CSV_NAME, kaggle))
    return result


def write_image_outputs(prediction, output_dir: Path, name: str, formats: OutputFormats) -> list[Path]:
    """The per-image files of one prediction (see :class:`OutputFormats`)."""
    labels, scores = prediction.labels, prediction.scores
    written = [
        writers.write_label_tiff(output_dir / f"{name}_labels.tif", labels),
        writers.write_overlay_png(output_dir / f"{name}_overlay.png", prediction.image, labels),
    ]
    if formats.objects_csv:
        written.append(writers.write_objects_csv(output_dir / f"{name}_objects.csv", prediction.table, name, prediction.source or ""))
    if formats.geojson:
        written.append(writers.write_geojson(output_dir / f"{name}.geojson", labels, scores, formats.geojson_object_type))
    if formats.imagej:
        written.append(writers.write_imagej_zip(output_dir / f"{name}_rois.zip", labels))
    return written
