"""One image reader for training, evaluation and prediction.

Microscopy images come as grey, grey stored as RGBA (most of Kaggle's), RGB, and 8- or 16-bit
PNG/TIFF. Detectron2's own ``read_image`` goes through PIL and saturates 16-bit images to 255,
so we decode with OpenCV/tifffile and map anything wider than 8 bits to uint8 by percentiles.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import tifffile

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_EXTENSIONS = (".tif", ".tiff")
DEFAULT_PERCENTILES = (0.5, 99.5)


@contextmanager
def _quiet_opencv():
    """OpenCV logs its own line for a corrupt file; we raise an error naming the file instead."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def load_image_array(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as stored: its own dtype, HxW or HxWxC with C <= 4, RGB(A) order.

    Raises OSError for a missing or undecodable file, ValueError for a shape that is not an
    image (a z-stack, a 5-channel array).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in TIFF_EXTENSIONS:
        try:
            array = tifffile.imread(path)
        except Exception as error:  # tifffile raises several types for corrupt files
            raise OSError(f"{path}: cannot decode TIFF ({error})") from error
        if array.ndim == 3 and array.shape[0] <= 4 < array.shape[2]:
            array = np.moveaxis(array, 0, -1)  # channels-first TIFF
    else:
        data = np.fromfile(path, dtype=np.uint8)
        if data.size == 0:
            raise OSError(f"{path}: empty file")
        with _quiet_opencv():
            array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if array is None:
            raise OSError(f"{path}: cannot decode image")
        if array.ndim == 3 and array.shape[2] == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
        elif array.ndim == 3 and array.shape[2] == 4:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] > 4):
        raise ValueError(f"{path}: shape {array.shape} is not a 2-D grey or colour image")
    return array


def normalize_to_uint8(
    array: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Stretch the given low/high percentiles (over all channels jointly, so colours keep their
    balance) to 0..255; robust to the few hot pixels and dark offsets of 12/16-bit cameras."""
    low, high = np.percentile(array, percentiles)
    if high <= low:
        low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (array.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def to_rgb_uint8(
    array: np.ndarray,
    normalize_uint8: bool = False,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """HxW or HxWxC (C <= 4, RGB(A) order) of any dtype to HxWx3 uint8 RGB.

    Alpha is dropped, grey is replicated to three channels. uint8 passes through unchanged unless
    ``normalize_uint8``; every other dtype is percentile-normalised.
    """
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., :-1]  # drop alpha
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8 or normalize_uint8:
        array = normalize_to_uint8(array, percentiles)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


def read_image(
    path: str | os.PathLike,
    format: str = "BGR",
    normalize_uint8: bool = False,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Read any supported image as HxWx3 uint8 in ``format`` ("BGR", Detectron2's default
    INPUT.FORMAT, or "RGB"), or HxWx1 for "L"; see :func:`to_rgb_uint8` for the conversion."""
    rgb = to_rgb_uint8(load_image_array(path), normalize_uint8, percentiles)
    if format == "RGB":
        return rgb
    if format == "BGR":
        return np.ascontiguousarray(rgb[..., ::-1])
    if format == "L":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    raise ValueError(f"unsupported image format {format!r}; use 'BGR', 'RGB' or 'L'")
