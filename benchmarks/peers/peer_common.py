"""What the peer scripts share: the converter's COCO JSON as images and label images, the input
files of ``predict``, a wall-clock deadline, and label-image outputs like sharp_fpn's.

This runs inside a peer's own virtual environment (benchmarks/peers/setup.sh), so it imports
only numpy and the standard library at module level, and pycocotools, imageio and tifffile where
they are used; never sharp_fpn, which is not installed there. The command-line parsers are built
here without a peer installed, which is what tests/test_peers.py checks.

Outputs follow sharp_fpn.predict.writers: ``<name>_labels.tif`` (zlib TIFF, uint16, or uint32
beyond 65,535 objects; 0 is background) and ``<name>_objects.csv`` (columns image, source,
label, score, area), which benchmarks/peers/score.py reads for the score of each object.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
LABELS_SUFFIX = "_labels.tif"
OBJECTS_SUFFIX = "_objects.csv"
TIMINGS_NAME = "predict_timings.json"
TRAIN_SUMMARY_NAME = "train_summary.json"
OBJECTS_COLUMNS = ("image", "source", "label", "score", "area")


class PeerError(Exception):
    """A problem the user can fix (a missing file, a bad option): printed as one line."""


# -- images ----------------------------------------------------------------------------------

def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as HxWx3 in its own dtype: alpha dropped, grey repeated to three channels,
    so that every peer sees the same three channels as sharp_fpn does."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise PeerError(f"{path}: no such file")
    try:
        image = np.asarray(iio.imread(path))
    except Exception as error:  # imageio raises several types for undecodable files
        raise PeerError(f"{path}: cannot decode image ({error})") from None
    if image.ndim == 3 and image.shape[0] <= 4 < image.shape[2]:
        image = np.moveaxis(image, 0, -1)  # channels-first TIFF
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[..., :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise PeerError(f"{path}: shape {image.shape} is not a 2-D grey or colour image")
    return np.ascontiguousarray(image)


def is_bright_background(rgb: np.ndarray) -> bool:
    """Grey image with a bright background (brightfield), by the rule of sharp_fpn.data.kinds:
    channels alike (mean |R-G| + |G-B| <= 4 on 0-255) and median >= half the range."""
    scale = 255.0 / np.iinfo(rgb.dtype).max if np.issubdtype(rgb.dtype, np.integer) else 1.0
    x = rgb.astype(np.float32) * np.float32(scale)
    colour = np.abs(x[..., 0] - x[..., 1]).mean() + np.abs(x[..., 1] - x[..., 2]).mean()
    return bool(colour <= 4.0 and np.median(x.mean(axis=2)) >= 128)


def invert(rgb: np.ndarray) -> np.ndarray:
    """Dark-for-bright of an integer image (max - value), or of a float one (1 - value)."""
    if np.issubdtype(rgb.dtype, np.integer):
        return np.iinfo(rgb.dtype).max - rgb
    return 1.0 - rgb


# -- the converter's COCO JSON ---------------------------------------------------------------

def recorded_image_root(json_path: Path) -> Path:
    """The image root the converter recorded (``info.image_root``, relative to the JSON's
    folder), else the JSON's folder."""
    info = read_json(json_path).get("info") or {}
    root = info.get("image_root") if isinstance(info, dict) else None
    return Path(os.path.normpath(json_path.parent / root)) if root else json_path.parent


def read_json(path: Path, coco: bool = True) -> dict:
    """A JSON file's object; with ``coco``, one that has COCO's "images"."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise PeerError(f"{path}: cannot read ({error.strerror or error})") from None
    except ValueError as error:
        raise PeerError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(data, dict) or (coco and "images" not in data):
        raise PeerError(f"{path}: not a COCO JSON (no 'images')")
    return data


@dataclass
class Sample:
    """One training image: its COCO id, output name, file, pixels (HxWx3) and instance labels."""

    image_id: int
    name: str
    path: Path
    image: np.ndarray
    labels: np.ndarray


def label_dtype(num_objects: int) -> np.dtype:
    """uint16 up to 65,535 objects, uint32 beyond (as sharp_fpn.predict.labels)."""
    return np.dtype(np.uint16 if num_objects <= np.iinfo(np.uint16).max else np.uint32)


def annotations_to_labels(annotations: Sequence[dict], height: int, width: int) -> np.ndarray:
    """Instance labels 1..n of an image's non-crowd annotations (compressed or uncompressed RLE,
    or polygons), in annotation order; where masks overlap, the earlier one keeps the pixel."""
    import pycocotools.mask as mask_util

    kept = [a for a in annotations if not a.get("iscrowd", 0)]
    labels = np.zeros((height, width), dtype=label_dtype(len(kept)))
    for number, annotation in enumerate(kept, start=1):
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, dict):
            counts = segmentation["counts"]
            if isinstance(counts, list):
                rle = mask_util.frPyObjects(segmentation, height, width)
            else:
                rle = {"size": list(segmentation["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
        mask = mask_util.decode(rle).astype(bool)
        labels[mask & (labels == 0)] = number
    return labels


def coco_image_paths(json_path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[tuple[int, Path]]:
    """(image id, file) of every image of a COCO JSON, in its order."""
    json_path = Path(json_path)
    data = read_json(json_path)
    root = Path(image_root) if image_root else recorded_image_root(json_path)
    return [(int(im["id"]), root / im["file_name"]) for im in data["images"]]


def load_coco_samples(json_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                      limit: int | None = None, log: Callable[[str], None] = lambda m: None) -> list[Sample]:
    """The images of a converter's JSON with their instance labels (first ``limit`` images)."""
    json_path = Path(json_path)
    data = read_json(json_path)
    root = Path(image_root) if image_root else recorded_image_root(json_path)
    by_image: dict[int, list[dict]] = {}
    for annotation in data.get("annotations", []):
        by_image.setdefault(int(annotation["image_id"]), []).append(annotation)
    images = data["images"][:limit] if limit else data["images"]
    if not images:
        raise PeerError(f"{json_path}: no images")
    samples = []
    started = time.perf_counter()
    for record in images:
        path = root / record["file_name"]
        image = read_rgb(path)
        height, width = int(record["height"]), int(record["width"])
        if image.shape[:2] != (height, width):
            raise PeerError(f"{path}: {image.shape[1]}x{image.shape[0]} px, the JSON says {width}x{height}")
        labels = annotations_to_labels(sorted(by_image.get(int(record["id"]), []), key=lambda a: a["id"]), height, width)
        samples.append(Sample(int(record["id"]), image_name(path), path, image, labels))
    log(f"read {len(samples)} images with {sum(int(s.labels.max()) for s in samples):,} nuclei from {json_path} "
        f"(image root {root}) in {time.perf_counter() - started:.1f} s")
    return samples


def image_name(path: Path) -> str:
    """The output name of an input file: its stem (Dsb2018: the image id)."""
    return Path(path).stem


def holdout_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, held-back) indices of ``count`` items: a seeded shuffle, ``fraction`` of them
    (rounded, at least 1 when there are 2 or more) held back, each part in input order."""
    if not 0.0 <= fraction < 1.0:
        raise PeerError(f"held-back fraction must be in [0, 1), got {fraction}")
    held = 0 if count < 2 or fraction == 0 else min(count - 1, max(1, int(round(fraction * count))))
    order = np.random.default_rng(seed).permutation(count)
    held_back = sorted(int(i) for i in order[:held])
    held_set = set(held_back)
    return [i for i in range(count) if i not in held_set], held_back


# -- inputs of predict -----------------------------------------------------------------------

def expand_inputs(items: Sequence[str]) -> list[Path]:
    """Files, folders (their image files, not recursive) and globs (``**`` recurses) -> image
    files in order without repeats. An item that gives nothing is an error naming it."""
    files, seen = [], set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = [Path(p) for p in sorted(glob.glob(item, recursive=True))
                     if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS]
        else:
            raise PeerError(f"{item}: no such file or folder")
        if not found:
            raise PeerError(f"{item}: no image files ({' '.join(IMAGE_EXTENSIONS)})")
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    return files


def predict_inputs(args: argparse.Namespace) -> list[Path]:
    """The files ``predict`` works on: its positional inputs, or the images of --coco-json."""
    if args.coco_json:
        files = [path for _, path in coco_image_paths(args.coco_json, args.image_root)]
    else:
        files = expand_inputs(args.inputs)
    files = files[: args.limit] if args.limit else files
    if not files:
        raise PeerError(f"{args.coco_json}: no images")
    names = [image_name(f) for f in files]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PeerError(f"several inputs share the name {repeated[0]!r}; their outputs would overwrite each other")
    return files


# -- outputs ---------------------------------------------------------------------------------

def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_label_outputs(output_dir: Path, name: str, labels: np.ndarray, scores: dict[int, float], source: str) -> list[Path]:
    """``<name>_labels.tif`` (uint16/uint32) and ``<name>_objects.csv`` (one row per label)."""
    import tifffile

    present = np.unique(labels)
    present = present[present > 0]
    labels = labels.astype(label_dtype(int(present.max()) if present.size else 0), copy=False)
    tif = _atomic_write(output_dir / f"{name}{LABELS_SUFFIX}",
                        lambda p: tifffile.imwrite(p, labels, compression="zlib", photometric="minisblack"))
    areas = np.bincount(labels.ravel(), minlength=int(present.max()) + 1 if present.size else 1)

    def write_csv(p: Path) -> None:
        with open(p, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(OBJECTS_COLUMNS)
            for label in present.tolist():
                writer.writerow([name, source, label, f"{scores.get(label, 1.0):.6g}", int(areas[label])])

    return [tif, _atomic_write(output_dir / f"{name}{OBJECTS_SUFFIX}", write_csv)]


def write_json(path: Path, payload: dict) -> Path:
    return _atomic_write(Path(path), lambda p: p.write_text(json.dumps(payload, indent=1, default=str) + "\n"))


@dataclass
class Timings:
    """Seconds of each image's prediction (array in memory to label image: the disk is not
    timed, as in benchmarks/predict_speed.py), and what they were measured on."""

    tool: str
    versions: dict
    threads: int
    rows: list

    def add(self, name: str, shape: tuple, seconds: float, objects: int) -> None:
        self.rows.append({"image": name, "height": int(shape[0]), "width": int(shape[1]),
                          "seconds": seconds, "objects": int(objects)})

    def payload(self) -> dict:
        seconds = sum(r["seconds"] for r in self.rows)
        megapixels = sum(r["height"] * r["width"] for r in self.rows) / 1e6
        return {"tool": self.tool, "versions": self.versions, "threads": self.threads, **machine(),
                "images": len(self.rows), "seconds": seconds, "megapixels": megapixels,
                "s_per_megapixel": seconds / megapixels if megapixels else None, "per_image": self.rows}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def fitting_deadline(args: argparse.Namespace) -> "Deadline":
    """The deadline of fitting: the budget less the minutes kept for calibration."""
    return Deadline(args.budget_minutes - args.calibration_minutes)


class Deadline:
    """A wall-clock budget that started when this object was made."""

    def __init__(self, minutes: float):
        self.seconds = float(minutes) * 60.0
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def passed(self) -> bool:
        return self.remaining() <= 0


# -- command line ----------------------------------------------------------------------------

def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser(description: str, peer: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser of a peer script and its ``train`` and ``predict`` subparsers, with the options
    both peers share; each script adds its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,predict}")

    train = commands.add_parser("train", help=f"train {peer} from random weights on a converter's COCO JSON",
                                description=f"Train {peer} from random weights on a COCO JSON made by "
                                "datasets/prepare_dsb2018.py, for a wall-clock budget.")
    train.add_argument("train_json", help="the converter's train.json")
    train.add_argument("--image-root", help="folder its file_name are relative to (default: the one the converter recorded in it)")
    train.add_argument("--budget-minutes", type=positive_float, required=True,
                       help="wall-clock minutes from the start of this command to the end of fitting, less "
                            "--calibration-minutes; the calibration after fitting is timed in train_summary.json")
    train.add_argument("--calibration-minutes", type=float, default=0.0,
                       help="minutes of the budget kept for the calibration after fitting, so that the whole command "
                            "fits in --budget-minutes (default 0: the budget is for fitting alone)")
    train.add_argument("--model-dir", required=True, help="output folder of the model (created; an existing model there is an error)")
    train.add_argument("--seed", type=int, default=0, help="seed of the held-back split and of the peer's random numbers (default 0)")
    train.add_argument("--limit-images", type=int, help="use only the JSON's first N images (smoke runs)")
    train.add_argument("--threads", type=int, default=0, help="CPU threads of the peer's framework; 0: all cores (default 0)")

    predict = commands.add_parser("predict", help="write <id>_labels.tif for images",
                                  description="Label images of a trained model: <name>_labels.tif (uint16, or uint32 beyond "
                                  "65,535 objects) and <name>_objects.csv per input, and predict_timings.json.")
    predict.add_argument("inputs", nargs="*", metavar="IMAGE", help="image files, folders or globs")
    predict.add_argument("--coco-json", help="instead of IMAGE: the images of this COCO JSON (e.g. the converter's val.json)")
    predict.add_argument("--image-root", help="with --coco-json: folder its file_name are relative to (default: the recorded one)")
    predict.add_argument("--model-dir", required=True, help="a folder written by train")
    predict.add_argument("--output-dir", required=True, help="where the label images go (created)")
    predict.add_argument("--limit", type=int, help="only the first N inputs (smoke runs)")
    predict.add_argument("--threads", type=int, default=0, help="CPU threads of the peer's framework; 0: all cores (default 0)")
    for command in (train, predict):
        command.add_argument("--verbose", action="store_true", help="show tracebacks and the peer's own logs")
    return parser, train, predict


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.command == "predict" and bool(args.inputs) == bool(args.coco_json):
        parser.error("predict: give IMAGE inputs or --coco-json, not both and not neither")
    if args.command == "train" and not 0 <= args.calibration_minutes < args.budget_minutes:
        parser.error("train: --calibration-minutes must be >= 0 and less than --budget-minutes")
    for option in ("limit", "limit_images"):
        if getattr(args, option, None) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    return args


def fresh_model_dir(path: str, marker: str, create: bool = True) -> Path:
    """The model folder of ``train`` (made now with ``create``); one that already holds
    ``marker`` is an error, so that a second run cannot mix its checkpoints with a first one's."""
    model_dir = Path(path)
    if (model_dir / marker).exists():
        raise PeerError(f"{model_dir}: already holds a trained model ({marker}); choose another --model-dir")
    if create:
        model_dir.mkdir(parents=True, exist_ok=True)
    return model_dir


def run(main: Callable[[argparse.Namespace], Iterable[Path] | None], args: argparse.Namespace) -> int:
    """Run a command; a PeerError or OSError is one line on stderr (a traceback with --verbose).
    The paths the command returns are printed at the end."""
    try:
        written = main(args)
    except (PeerError, OSError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written or ():
        print(f"wrote {path}")
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
