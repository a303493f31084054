"""Nuclei prediction: a trained Mask R-CNN to instance labels and the usual exchange formats.

``NucleiPredictor(config, weights).predict(path_or_array)`` gives a :class:`Prediction`
(``labels``, ``scores``, ``table``); :mod:`.writers` turns it into files; :mod:`.batch` runs
over many files for ``tools/predict.py``. Large images are tiled (:mod:`.tiling`).
"""
from .batch import OutputFormats, expand_inputs, predict_files
from .labels import TABLE_COLUMNS, object_table, paint_labels
from .predictor import NucleiPredictor, Prediction, SetupError
from .tiling import Detections, Window, detect_tiled, tile_windows

__all__ = [
    "Detections",
    "NucleiPredictor",
    "OutputFormats",
    "Prediction",
    "SetupError",
    "TABLE_COLUMNS",
    "Window",
    "detect_tiled",
    "expand_inputs",
    "object_table",
    "paint_labels",
    "predict_files",
    "tile_windows",
]
