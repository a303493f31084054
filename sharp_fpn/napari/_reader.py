"""Reader for the ``<name>_labels.tif`` files that ``tools/predict.py`` writes: they open as labels
layers (napari's own TIFF reader would show them as a grey image)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tifffile

LABEL_SUFFIXES = ("_labels.tif", "_labels.tiff")

PathOrPaths = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def _paths(path: PathOrPaths) -> list[str]:
    return [os.fspath(path)] if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]


def get_reader(path: PathOrPaths) -> Optional[Callable]:
    """napari's reader hook: :func:`read_label_images` if every path is a ``*_labels.tif``,
    None otherwise (napari then asks other readers)."""
    paths = _paths(path)
    if paths and all(p.lower().endswith(LABEL_SUFFIXES) for p in paths):
        return read_label_images
    return None


def read_label_image(path: Union[str, os.PathLike]) -> tuple:
    """One label TIFF as a napari layer-data tuple, named after the file. A file that is not an
    integer label image is a ValueError naming it (napari shows it in the viewer)."""
    try:
        labels = tifffile.imread(path)
    except (OSError, ValueError) as error:  # tifffile.TiffFileError is a ValueError
        raise ValueError(f"{path}: cannot read it as a TIFF ({error})") from error
    if labels.ndim < 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{path}: not a label image (expected integer labels, got {labels.dtype} of shape {labels.shape})")
    return labels, {"name": Path(path).stem}, "labels"


def read_label_images(path: PathOrPaths) -> list[tuple]:
    return [read_label_image(p) for p in _paths(path)]
