"""``NucleiPredictor``: a trained Mask R-CNN as a function from an image to instance labels.

Images are read and normalised by :mod:`sharp_fpn.data.image_io`, as in training. The model
sees each image at one scale (``scale``), and in tiles when that is larger than ``tile_size``
(see :mod:`.tiling` for the merge rule). Masks are pasted object by object into their boxes only,
so memory grows with the image area (a few bytes per pixel), not with objects x pixels.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..checkpoint import SharpCheckpointer
from ..config import get_sharp_cfg
from ..data.augment import inference_scale, scaled_shape
from ..data.image_io import load_image_array, to_rgb_uint8
from ..data.kinds import bright_nuclei
from ..modeling.tta import with_test_time_flips
from .labels import object_table, paint_labels
from .tiling import Detections, Window, check_tiling, detect_tiled

DEFAULT_TILE_SIZE = 1400  # one pass for the x2 model input of a 520x696 image (1040x1392); RESULTS.md#how-fast-is-prediction
DEFAULT_TILE_OVERLAP = 128
DEFAULT_SCORE_THRESHOLD = 0.5


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX, as Linux lists its
    flags). Elsewhere bfloat16 is emulated and slower than float32, so it is not used."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def bfloat16_features(backbone: torch.nn.Module) -> None:
    """Run ``backbone`` under CPU bfloat16 autocast in channels-last layout (the one oneDNN's
    bfloat16 convolutions are fastest in), its feature maps handed on in float32 and the usual
    layout: the backbone and neck, most of the time, go at bfloat16 speed, while the RPN and the
    box and mask heads, which decide which objects pass the score threshold, stay exact."""
    backbone.to(memory_format=torch.channels_last)
    forward = backbone.forward

    @functools.wraps(forward)
    def run(image: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = forward(image.contiguous(memory_format=torch.channels_last))
        return {name: feature.float().contiguous() for name, feature in features.items()}

    backbone.forward = run


class SetupError(RuntimeError):
    """The config or the weights cannot make a working predictor; the message is one line that
    names the file and the problem."""


@dataclass
class Prediction:
    """Instances found in one image.

    labels: HxW uint16 (uint32 beyond 65,535 objects), 0 background, k the k-th object by
    decreasing score; objects do not overlap. scores: (n,) float32, ``scores[k - 1]`` for label
    k. image: HxWx3 uint8 RGB, the normalised image (before any resize), for overlays.
    intensity: HxW, the image as stored (alpha dropped, colour channels averaged), for the
    per-object mean intensity. source: the file it came from, if any. scale: (x, y) factor from
    file pixels to model input pixels. num_tiles: model passes the image took (1: untiled).
    """

    labels: np.ndarray
    scores: np.ndarray
    image: np.ndarray
    intensity: np.ndarray
    source: Optional[str] = None
    scale: tuple[float, float] = (1.0, 1.0)
    num_tiles: int = 1

    @property
    def num_objects(self) -> int:
        return len(self.scores)

    @cached_property
    def table(self) -> list[dict]:
        """One dict per object, in label order: label, score, area, centroid_y/x, bbox_min_row/
        col, bbox_max_row/col (exclusive), mean_intensity (see ``labels.TABLE_COLUMNS``)."""
        return object_table(self.labels, self.scores, self.intensity)


def grey_intensity(array: np.ndarray) -> np.ndarray:
    """HxW intensities of an image as stored: grey as is, colour averaged, alpha dropped."""
    if array.ndim == 2:
        return array
    channels = array.shape[2] - 1 if array.shape[2] in (2, 4) else array.shape[2]
    if channels == 1:
        return array[..., 0]
    return array[..., :channels].mean(axis=2, dtype=np.float32)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Silence per-key warnings while loading weights: a mismatch is reported once, by us."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _RecordingCheckpointer(SharpCheckpointer):
    """Keeps the incompatible keys of the last load instead of logging them."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        pass


def _first_line(error: BaseException) -> str:
    """The first sentence of an exception's message, on one line (library messages can be long)."""
    text = " ".join(str(error).strip("'\" ").split())
    if not text:
        return type(error).__name__
    sentence = text.split(". ")[0]
    return sentence[:200] + ("..." if len(sentence) > 200 else "")


def _examples(keys: Sequence[str], n: int = 3) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_weights(model: torch.nn.Module, weights: Union[str, os.PathLike, Mapping], config_name: str = "the config") -> None:
    """Load a local checkpoint file, or a state dict already read, strictly: a missing file, an
    unreadable one or one made for another architecture (missing, unexpected or differently
    shaped tensors) is a SetupError."""
    checkpointer = _RecordingCheckpointer(model)
    if isinstance(weights, Mapping):
        name = "the given state dict"
        with _quiet_loggers("fvcore.common.checkpoint"):
            checkpointer._load_model({"model": dict(weights)})
    else:
        path = name = Path(weights)
        if not path.is_file():
            raise SetupError(f"weights {path}: no such file")
        try:
            with _quiet_loggers("fvcore.common.checkpoint", "detectron2.checkpoint.detection_checkpoint",
                                "detectron2.checkpoint.c2_model_loading"):
                checkpointer.load(str(path))
        except Exception as error:  # torch.load/pickle raise many types for a bad file
            raise SetupError(f"weights {path}: cannot read a checkpoint ({type(error).__name__}: {_first_line(error)})") from error
    incompatible = checkpointer.incompatible
    if incompatible is None:
        raise SetupError(f"weights {name}: no model state found")
    problems = []
    if incompatible.incorrect_shapes:
        shapes = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in incompatible.incorrect_shapes]
        problems.append(f"{len(shapes)} tensors of another shape (e.g. {_examples(shapes, 1)})")
    if incompatible.missing_keys:
        problems.append(f"{len(incompatible.missing_keys)} model tensors missing (e.g. {_examples(incompatible.missing_keys, 2)})")
    if incompatible.unexpected_keys:
        problems.append(f"{len(incompatible.unexpected_keys)} unknown tensors (e.g. {_examples(incompatible.unexpected_keys, 2)})")
    if problems:
        raise SetupError(f"weights {name} do not match {config_name}: " + "; ".join(problems))


def build_predict_cfg(
    config: Union[str, os.PathLike, CfgNode],
    device: Optional[str] = None,
    score_threshold: Optional[float] = DEFAULT_SCORE_THRESHOLD,
    opts: Sequence[str] = (),
) -> CfgNode:
    """The config for prediction: a yaml (path or shipped name) or a CfgNode, then ``opts``,
    the device and the score threshold. Errors are SetupErrors naming the config."""
    name = "the given config" if isinstance(config, CfgNode) else str(config)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(f"device {device}: CUDA is not available here; use --device cpu")
    if len(opts) % 2:
        raise SetupError(f"config overrides must be KEY VALUE pairs, got {len(opts)} words: {' '.join(map(str, opts))}")
    opts = list(opts) + ["MODEL.DEVICE", device]
    try:
        if isinstance(config, CfgNode):
            cfg = config.clone()
            cfg.defrost()
            cfg.merge_from_list(opts)
        else:
            cfg = get_sharp_cfg(str(config), opts)
    except (OSError, KeyError, ValueError, AssertionError, TypeError, yaml.YAMLError) as error:
        raise SetupError(f"config {name}: {_first_line(error)}") from error
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN" or not cfg.MODEL.MASK_ON:
        raise SetupError(f"config {name}: prediction needs a Mask R-CNN config (META_ARCHITECTURE "
                         f"GeneralizedRCNN with MASK_ON), got {cfg.MODEL.META_ARCHITECTURE}")
    cfg.MODEL.DEVICE = device
    if score_threshold is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_threshold)
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    return cfg


class NucleiPredictor:
    """A trained Mask R-CNN that turns an image into non-overlapping nuclei labels.

    Args:
        config: yaml path, shipped config name (e.g. "mask_rcnn_sharp_R50") or a CfgNode.
        weights: local checkpoint (e.g. ``output/.../model_final.pth``), or a state dict
            already read; must match the config. A model shipped with the package:
            :meth:`from_pretrained`.
        device: "cpu", "cuda" or None (CUDA when available).
        score_threshold: detections below it are dropped (MODEL.ROI_HEADS.SCORE_THRESH_TEST);
            None keeps the config's value.
        opts: ``KEY VALUE`` config overrides.
        tile_size: largest side (model input pixels) predicted in one pass; larger images are
            tiled. None or 0: never tile.
        tile_overlap: overlap of neighbouring tiles (model input pixels); make it larger than
            the largest nucleus.
        scale: "auto" (the config's test scale rule, :func:`~sharp_fpn.data.augment.inference_scale`,
            as in training and evaluation) or a fixed factor from file pixels to model input.
        mask_threshold: mask probability at which a pixel belongs to a nucleus (Detectron2: 0.5).
        tta: average the model over flips of each image or tile (``TEST.AUG.ENABLED``,
            :mod:`~sharp_fpn.modeling.tta`; 2-4 views, each costing about two passes); None
            keeps the config's setting.
        exact: compute in float32 throughout, as the model was evaluated. By default the
            backbone and neck run in bfloat16 on CPUs that compute it in hardware
            (:func:`cpu_has_native_bfloat16`); ``precision`` says which path is in use.

    ``predict(path_or_array)`` returns a :class:`Prediction`.
    """

    def __init__(
        self,
        config: Union[str, os.PathLike, CfgNode],
        weights: Union[str, os.PathLike],
        device: Optional[str] = None,
        score_threshold: Optional[float] = DEFAULT_SCORE_THRESHOLD,
        opts: Sequence[str] = (),
        tile_size: Optional[int] = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        scale: Union[str, float] = "auto",
        mask_threshold: float = 0.5,
        tta: Optional[bool] = None,
        exact: bool = False,
    ):
        if tile_size:
            check_tiling(tile_size, tile_overlap)
        if scale != "auto" and not float(scale) > 0:
            raise ValueError(f"scale must be 'auto' or a positive number, got {scale!r}")
        if tta is not None:
            opts = [*opts, "TEST.AUG.ENABLED", str(bool(tta))]
        self.cfg = build_predict_cfg(config, device, score_threshold, opts)
        name = "the given config" if isinstance(config, CfgNode) else str(config)
        try:
            self.model = build_model(self.cfg)
        except Exception as error:  # registries raise KeyError, shape checks AssertionError
            raise SetupError(f"config {name}: cannot build the model ({type(error).__name__}: {_first_line(error)})") from error
        load_weights(self.model, weights, name)
        self.model.eval()
        self.precision = "float32"
        if not exact and self.cfg.MODEL.DEVICE == "cpu" and cpu_has_native_bfloat16():
            bfloat16_features(self.model.backbone)
            self.precision = "bfloat16 backbone"
        self.inference_model = with_test_time_flips(self.cfg, self.model)  # the model, or it over flips
        self.weights = "the given state dict" if isinstance(weights, Mapping) else str(weights)
        self.model_name: Optional[str] = None  # the shipped model's name, set by from_pretrained
        self.tile_size = tile_size or None
        self.tile_overlap = tile_overlap
        self.scale = scale
        self.mask_threshold = mask_threshold
        self.input_format = self.cfg.INPUT.FORMAT

    @classmethod
    def from_pretrained(cls, name="nuclei", **kwargs) -> "NucleiPredictor":
        """The model shipped with the package under ``name`` (see
        :data:`~sharp_fpn.predict.pretrained.SHIPPED_MODELS`; a ShippedModel is accepted too),
        its weights checked against the recorded SHA-256. ``kwargs`` as for the constructor."""
        from .pretrained import shipped_model

        model = shipped_model(name)
        state = model.load_state_dict()
        predictor = cls(model.config_path, state, **kwargs)
        predictor.weights = str(model.weights_path)
        predictor.model_name = model.name
        return predictor

    def scale_for(self, height: int, width: int) -> float:
        if self.scale == "auto":
            return inference_scale(self.cfg, height, width)
        return float(self.scale)

    def predict(self, image: Union[str, os.PathLike, np.ndarray], progress=None) -> Prediction:
        """Labels and scores for one image: a file path, or an HxW / HxWxC (RGB or RGBA order)
        array of any dtype, as stored. ``progress`` optionally wraps the tile iterable.

        With ``INPUT.BRIGHT_NUCLEI`` in the config, the model sees the whole image inverted when
        its background is bright (:func:`~sharp_fpn.data.kinds.needs_inversion`, decided before
        resizing and tiling, as in training); ``Prediction.image`` stays the image as read.

        Raises OSError / ValueError for a file that cannot be read as an image.
        """
        source = None
        if isinstance(image, (str, os.PathLike)):
            source = str(image)
            image = load_image_array(image)
        rgb = to_rgb_uint8(np.asarray(image))
        height, width = rgb.shape[:2]
        factor = self.scale_for(height, width)
        new_h, new_w = scaled_shape(height, width, factor)
        model_rgb = bright_nuclei(rgb, self.cfg.INPUT.get("BRIGHT_NUCLEI", ""))
        model_input = model_rgb if self.input_format == "RGB" else model_rgb[..., ::-1]
        if (new_h, new_w) != (height, width):
            model_input = T.ResizeTransform(height, width, new_h, new_w).apply_image(np.ascontiguousarray(model_input))
        counter = []

        def detect(tile: np.ndarray, window: Window) -> Detections:
            counter.append(window)
            return self.detect(tile)

        found = detect_tiled(model_input, detect, self.tile_size, self.tile_overlap, progress)
        scale_x, scale_y = width / new_w, height / new_h
        labels, scores = paint_labels(found.scaled(scale_x, scale_y), height, width, self.mask_threshold)
        return Prediction(labels, scores, rgb, grey_intensity(image), source, (1 / scale_x, 1 / scale_y), len(counter))

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> Detections:
        """Raw detections on one HxWx3 uint8 model input (INPUT.FORMAT order, already resized),
        in its own pixel coordinates."""
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32))
        height, width = image.shape[:2]
        model_input = {"image": tensor, "height": height, "width": width}
        instances = self.inference_model.inference([model_input], do_postprocess=False)[0]
        instances = instances.to("cpu")
        masks = instances.pred_masks[:, 0]
        return Detections(
            instances.pred_boxes.tensor.float().numpy().astype(np.float64),
            instances.scores.float().numpy(),
            masks.float().numpy(),
        )
