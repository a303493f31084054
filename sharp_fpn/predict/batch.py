"""Prediction over many files: expand inputs, predict each image, write its outputs, and keep
going past bad files (each failure is one line naming the file).

Many images go faster in parallel: ``workers`` processes, each with its own model, predict the
images of one list and the batch's outputs come out as one process writes them. Many machines
split a list into shards (``shard=(k, n)``: every n-th file from the k-th), each shard writing
its per-image files and part files of the batch-level outputs; :func:`merge_shards` then joins
the parts into exactly the files one process writes.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import glob
import itertools
import json
import multiprocessing
import os
import pickle
import re
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.pool import ExceptionWithTraceback
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

from ..data.image_io import IMAGE_EXTENSIONS
from . import writers
from .predictor import NucleiPredictor, SetupError

COCO_RESULTS_NAME = "coco_results.json"
KAGGLE_CSV_NAME = "submission.csv"
# What each shard leaves beside its images' files: {} is "shard-K-of-N".
SHARD_MANIFEST = "predict.{}.json"
SHARD_PARTS = {"coco": "coco_results.{}.json", "kaggle": "submission.{}.csv"}


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
    predictor: Union[NucleiPredictor, Callable[[], NucleiPredictor]],
    files: Sequence[Path],
    output_dir: str | Path,
    formats: Optional[OutputFormats] = None,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
    tile_progress: Optional[Callable[[Iterable, str], Iterable]] = None,
    on_error: Callable[[Path, BaseException, str], None] = lambda path, error, message: None,
    image_ids: Optional[Sequence[int]] = None,
    *,
    workers: int = 1,
    threads: Optional[int] = None,
    shard: Optional[tuple[int, int]] = None,
) -> BatchResult:
    """Predict every file and write its outputs to ``output_dir``.

    A file that cannot be read or predicted is skipped: ``on_error(path, error, message)`` is
    called with a one-line message and the message is kept in ``BatchResult.failures``.
    ``progress`` wraps the list of (image id, file, name); ``tile_progress(tiles, name)`` the
    tiles of a tiled image. ``image_ids``: the COCO image id of each file (default 1, 2, ...).
    The output folder is made with the first file written: an empty batch leaves nothing.

    ``workers`` > 1 predicts in that many processes, each building its own model with
    ``predictor``, which must then be a picklable function of no arguments (e.g.
    ``functools.partial(NucleiPredictor, config, weights)``), and running ``threads`` torch
    threads (default: the cores shared out, unless OMP_NUM_THREADS is set). The outputs are
    those of one process, in the same order; tiles show no progress of their own.

    ``shard=(k, n)`` predicts every n-th file from the k-th (k from 0) of ``files`` (the whole
    list, the same on every shard: names and image ids stay those of one run over it) and
    writes the batch-level outputs as part files with a manifest, for :func:`merge_shards`.
    """
    formats = formats or OutputFormats()
    output_dir = Path(output_dir)
    result = BatchResult()
    coco, kaggle, manifest = [], [], []
    names = output_names(files)
    image_ids = list(image_ids) if image_ids is not None else list(range(1, len(files) + 1))
    if len(image_ids) != len(files):
        raise ValueError(f"{len(image_ids)} image ids for {len(files)} files")
    positions = list(range(len(files)))
    if shard is not None:
        check_shard(*shard)
        positions = positions[shard[0]::shard[1]]
    items = [(image_ids[p], files[p], names[p]) for p in positions]
    if workers > 1 and len(items) > 1:
        outcomes = _predict_in_workers(predictor, items, output_dir, formats, workers, threads)
    else:
        predictor = predictor if hasattr(predictor, "predict") else predictor()
        outcomes = (predict_one(predictor, item, output_dir, formats, tile_progress) for item in items)
    with contextlib.closing(outcomes):
        for item, position, outcome in zip(progress(items), positions, outcomes):  # progress first: it ends the bar
            index, file, name = item
            if outcome.failure is not None:
                result.failures.append(outcome.failure)
                on_error(file, outcome.error, outcome.failure)
                continue
            result.images += 1
            result.objects += outcome.objects
            result.objects_per_image[name] = outcome.objects
            result.written += outcome.written
            coco += outcome.coco
            kaggle += outcome.kaggle
            manifest.append([position, name, index, outcome.objects])
    tag = None if shard is None else f"shard-{shard[0]}-of-{shard[1]}"
    if formats.coco and result.images:
        name = SHARD_PARTS["coco"].format(tag) if tag else COCO_RESULTS_NAME
        result.written.append(writers.write_coco_json(output_dir / name, coco))
    if formats.kaggle and result.images:
        name = SHARD_PARTS["kaggle"].format(tag) if tag else KAGGLE_CSV_NAME
        result.written.append(writers.write_kaggle_csv(output_dir / name, kaggle))
    if tag:  # last: a manifest says the shard finished
        record = {"shard": shard[0], "shards": shard[1], "files": len(files), "coco": formats.coco,
                  "kaggle": formats.kaggle, "images": manifest, "failures": result.failures}
        result.written.append(writers.write_text_atomic(output_dir / SHARD_MANIFEST.format(tag), json.dumps(record)))
    return result


@dataclass
class ImageOutcome:
    """What predicting one image gave the batch: its files and its rows of the batch-level
    outputs, or the one-line message (and the error) of its failure."""

    written: list[Path] = field(default_factory=list)
    objects: int = 0
    coco: list[dict] = field(default_factory=list)
    kaggle: list[tuple[str, str]] = field(default_factory=list)
    failure: Optional[str] = None
    error: Optional[BaseException] = None


def predict_one(predictor: NucleiPredictor, item: tuple[int, Path, str], output_dir: Path, formats: OutputFormats,
                tile_progress: Optional[Callable[[Iterable, str], Iterable]] = None) -> ImageOutcome:
    """Predict one (image id, file, output name) and write its per-image files."""
    index, file, name = item
    tiles = (lambda items: tile_progress(items, name)) if tile_progress else None
    try:
        prediction = predictor.predict(file, progress=tiles)
        written = write_image_outputs(prediction, output_dir, name, formats)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # a bad file must not stop the batch
        return ImageOutcome(failure=one_line(error, file), error=error)
    return ImageOutcome(
        written, prediction.num_objects,
        writers.coco_results(index, prediction.labels, prediction.scores, file.name) if formats.coco else [],
        writers.kaggle_rows(name, prediction.labels) if formats.kaggle else [],
    )


def cores() -> int:
    """The cores this process may run on (a job scheduler's share, not the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Starting worker processes costs about 3 s of wall time on 2 cores (imports and a model each);
# against one 2-thread process they save 7-12%, so they pay off from about 11-18 megapixels of
# input (benchmarks/RESULTS.md#round-two-four-more-levers-none-adopted-2026-12-05).
AUTO_WORKERS_MIN_MEGAPIXELS = 16.0


def auto_workers(files: Sequence[Union[str, os.PathLike]], available: Optional[int] = None) -> int:
    """``--workers auto``: one worker per core for a folder big enough to repay starting them,
    else 1 (this process alone, with every core's threads)."""
    available = cores() if available is None else available
    if available < 2 or len(files) < 2:
        return 1
    # Headers are read only until the bound is reached: a folder of thousands starts at once.
    enough = any(total >= AUTO_WORKERS_MIN_MEGAPIXELS * 1e6 for total in itertools.accumulate(map(pixels, files)))
    return available if enough else 1


def pixels(file: Union[str, os.PathLike]) -> int:
    """An image's pixel count from its header, without decoding it; 0 where the header cannot be
    read (predicting it reports why)."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            return image.width * image.height
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0


# The model and settings of a worker process, set once by _start_worker.
_WORKER: dict = {}


def _start_worker(make_predictor, threads, output_dir, formats):
    import torch

    if threads:
        torch.set_num_threads(threads)
    _WORKER.update(predictor=make_predictor(), output_dir=output_dir, formats=formats)


def _predict_in_worker(item):
    outcome = predict_one(_WORKER["predictor"], item, _WORKER["output_dir"], _WORKER["formats"])
    if outcome.error is not None:  # sent back with its traceback as text, or as its message
        try:
            pickle.loads(pickle.dumps(outcome.error))
            outcome.error = ExceptionWithTraceback(outcome.error, outcome.error.__traceback__)
        except Exception:
            outcome.error = RuntimeError(outcome.failure + "\n" + "".join(traceback.format_exception(outcome.error)))
    return outcome


# What a worker imports. A forkserver puts the working directory first on its path and, before
# Python 3.12, ignores this process's path, so a checkout of one of these there would be imported
# in its place.
_WORKER_PACKAGES = ("sharp_fpn", "detectron2", "torch")


def _working_directory_shadows_a_package() -> bool:
    cwd = Path.cwd()
    for name in _WORKER_PACKAGES:
        module = sys.modules.get(name)
        if module is not None and (cwd / name).is_dir() and (cwd / name).resolve() != Path(module.__file__).resolve().parent:
            return True
    return False


def _worker_context():
    """Workers forked from a fresh server process that imported this module once (a process
    forked from this one could hang in the OpenMP threads this one used); spawned, which takes
    this process's import path, where there is no fork or where the working directory holds
    another copy of a package the workers import."""
    if "forkserver" not in multiprocessing.get_all_start_methods() or _working_directory_shadows_a_package():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _predict_in_workers(make_predictor, items, output_dir, formats, workers, threads) -> Iterator[ImageOutcome]:
    """Outcomes of ``items`` in their order, from ``workers`` processes."""
    if hasattr(make_predictor, "predict"):
        raise TypeError("workers > 1 needs a picklable function that builds the predictor, not a predictor")
    workers = min(workers, len(items))
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, cores() // workers)
    executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=_worker_context(), initializer=_start_worker,
        initargs=(make_predictor, threads, output_dir, formats))
    try:
        yield from executor.map(_predict_in_worker, items)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def check_shard(k: int, n: int) -> None:
    if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
        raise ValueError(f"shard {k}/{n}: K/N needs N >= 1 and K from 0 to N-1")


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N), K from 0 to N - 1."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"shard {text!r}: give K/N, e.g. 0/4 for the first of 4 shards")
    shard = int(match.group(1)), int(match.group(2))
    check_shard(*shard)
    return shard


def shard_from_environment(environ=None) -> Optional[tuple[int, int]]:
    """(RANK, WORLD_SIZE) when a launcher (torchrun, or an ``export``) set both and
    WORLD_SIZE > 1, else None."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    shard = parse_shard(f"{env['RANK']}/{env['WORLD_SIZE']}")
    return shard if shard[1] > 1 else None


@dataclass
class MergeResult:
    shards: int = 0
    images: int = 0
    objects: int = 0
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def merge_shards(output_dir: str | Path) -> MergeResult:
    """Join the shards' part files in ``output_dir`` into the batch-level outputs one process
    over the whole list writes (``coco_results.json``, ``submission.csv``; per-image files need
    no merge), in the list's order, then delete the parts. Every shard must have finished
    (its manifest is there); otherwise a SetupError names the missing ones and nothing is
    written."""
    output_dir = Path(output_dir)
    pattern = re.compile(re.escape(SHARD_MANIFEST).replace(r"\{\}", r"shard-(\d+)-of-(\d+)"))
    manifests = sorted(p for p in output_dir.glob(SHARD_MANIFEST.format("shard-*-of-*")) if pattern.fullmatch(p.name))
    if not manifests:
        raise SetupError(f"{output_dir}: no shard to merge (no {SHARD_MANIFEST.format('shard-K-of-N')}); "
                         "run tools/predict.py --shard K/N into it first")
    records = []
    for path in manifests:
        try:
            record = json.loads(path.read_text())
            records.append((path, {key: record[key] for key in ("shard", "shards", "files", "coco", "kaggle", "images",
                                                                 "failures")}))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SetupError(f"{path}: not a shard manifest ({type(error).__name__}: {error}); predict its shard "
                             "again") from None
    shards = {record["shards"] for _, record in records}
    settings = {(record["files"], record["coco"], record["kaggle"]) for _, record in records}
    if len(shards) != 1 or len(settings) != 1:
        raise SetupError(f"{output_dir}: its shards come from different runs (another number of shards, inputs or "
                         "outputs); predict every shard of one run into a folder of its own")
    n = shards.pop()
    missing = sorted(set(range(n)) - {record["shard"] for _, record in records})
    if missing:
        names = ", ".join(SHARD_MANIFEST.format(f"shard-{k}-of-{n}") for k in missing)
        listed = ", ".join(map(str, missing))
        which = f"shard {listed} of {n} has" if len(missing) == 1 else f"shards {listed} of {n} have"
        them = "it" if len(missing) == 1 else "them"
        raise SetupError(f"{output_dir}: {which} not finished (no {names}); run {them}, then merge")
    result = MergeResult(shards=n)
    chunks = {"coco": [], "kaggle": []}  # (position, rows of one image)
    parts = []
    for path, record in records:
        tag = f"shard-{record['shard']}-of-{n}"
        result.images += len(record["images"])
        result.objects += sum(objects for *_, objects in record["images"])
        result.failures += record["failures"]
        for kind, read in (("coco", _read_coco_part), ("kaggle", _read_kaggle_part)):
            if not record[kind] or not record["images"]:
                continue
            part = output_dir / SHARD_PARTS[kind].format(tag)
            rows = read(part)
            counts = [objects if kind == "coco" else max(1, objects) for *_, objects in record["images"]]
            if len(rows) != sum(counts):
                raise SetupError(f"{part}: {len(rows)} rows where its manifest counts {sum(counts)}; predict this "
                                 "shard again")
            starts = [0, *itertools.accumulate(counts)]
            chunks[kind] += [(image[0], rows[a:b]) for image, a, b in zip(record["images"], starts, starts[1:])]
            parts.append(part)
    ordered = {kind: [row for _, rows in sorted(found, key=lambda chunk: chunk[0]) for row in rows]
               for kind, found in chunks.items()}
    first = records[0][1]
    if first["coco"] and result.images:
        result.written.append(writers.write_coco_json(output_dir / COCO_RESULTS_NAME, ordered["coco"]))
    if first["kaggle"] and result.images:
        result.written.append(writers.write_kaggle_csv(output_dir / KAGGLE_CSV_NAME, ordered["kaggle"]))
    for path in parts + [path for path, _ in records]:
        path.unlink()
    return result


def _read_coco_part(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SetupError(f"{path}: cannot read this part of the COCO results ({error}); predict its shard again") from None


def _read_kaggle_part(path: Path) -> list[tuple[str, str]]:
    try:
        with open(path, newline="") as f:
            rows = [tuple(row) for row in csv.reader(f)]
    except OSError as error:
        raise SetupError(f"{path}: cannot read this part of the Kaggle CSV ({error}); predict its shard again") from None
    if not rows or rows[0] != ("ImageId", "EncodedPixels"):
        raise SetupError(f"{path}: not a part of a Kaggle CSV (no ImageId,EncodedPixels header); predict its shard again")
    return rows[1:]


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
