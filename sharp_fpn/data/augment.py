"""The input pipeline of Mask R-CNN on nuclei: one scale rule, crops, and microscopy augmentations.

A model must see nuclei at the size it was trained on, whatever path an image takes, so the
scale rule lives here once and serves the training mapper, the evaluator's test mapper and
:class:`~sharp_fpn.predict.NucleiPredictor` (:func:`inference_scale`). Two rules (``INPUT.RESIZE``):

- ``"shortest_edge"``: Detectron2's rule (shortest side to ``MIN_SIZE_*``, longest at most
  ``MAX_SIZE_*``). It shrinks large images, and with them their small nuclei.
- ``"scale"``: a factor of the file's own pixels (``SCALE_TRAIN`` range, ``SCALE_TEST``), so a
  nucleus keeps its size relative to the camera's pixels whatever the field of view. Training
  then takes random crops (``INPUT.CROP``), which bounds the cost of an iteration.

Microscopy has no up or down, so ``INPUT.DIHEDRAL`` adds vertical flips and transposes to the
horizontal flip (all eight symmetries of the square), and ``INPUT.INTENSITY`` varies what
differs between labs: brightness, contrast, gamma, colour vs grey, dark-on-bright vs
bright-on-dark (inversion), and the amounts of each stain in colour (H&E) images
(:func:`hed_jitter`).
"""
from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T
from skimage.color import hed2rgb, rgb2hed

from .kinds import is_colour


def inference_scale(cfg, height: int, width: int) -> float:
    """The factor from file pixels to model input at test time, for every inference path."""
    if cfg.INPUT.RESIZE == "scale":
        return float(cfg.INPUT.SCALE_TEST)
    min_size, max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    if not min_size:
        return 1.0
    scale = min_size / min(height, width)
    if max_size > 0 and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return scale


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """Detectron2's rounding (ResizeShortestEdge), so every path makes the same input size."""
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


class RandomScale(T.Augmentation):
    """Resize by a factor drawn uniformly from [low, high], relative to the image's own size."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        height, width = image.shape[:2]
        new_h, new_w = scaled_shape(height, width, np.random.uniform(self.low, self.high))
        if (new_h, new_w) == (height, width):
            return T.NoOpTransform()
        return T.ResizeTransform(height, width, new_h, new_w)


class RandomScaledCrop(T.Augmentation):
    """A random crop of ``crop_size`` (model input pixels) of the image resized by a factor
    drawn from [low, high], made in the opposite order: the matching window of the file is cut
    first and only that is resized, so a large image with hundreds of masks costs no more than
    a small one. Images smaller than the crop are kept whole."""

    def __init__(self, low: float, high: float, crop_size: tuple[int, int]):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        height, width = image.shape[:2]
        scale = np.random.uniform(self.low, self.high)

        def window(length: int, size: int) -> tuple[int, int]:
            """(file pixels to cut, model pixels they become): the crop size exactly, unless
            the whole side is smaller."""
            cut = min(length, max(1, int(round(size / scale))))
            return cut, (size if cut < length else max(1, int(length * scale + 0.5)))

        (crop_h, new_h), (crop_w, new_w) = window(height, self.crop_size[0]), window(width, self.crop_size[1])
        y0 = np.random.randint(height - crop_h + 1)
        x0 = np.random.randint(width - crop_w + 1)
        return T.TransformList([T.CropTransform(x0, y0, crop_w, crop_h),
                                T.ResizeTransform(crop_h, crop_w, new_h, new_w)])


class TransposeTransform(T.Transform):
    """Swap the x and y axes; with both flips it spans the eight symmetries of the square."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img.swapaxes(0, 1))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords[:, ::-1].copy()

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> T.Transform:
        return self


class RandomTranspose(T.Augmentation):
    def __init__(self, prob: float = 0.5):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        return TransposeTransform() if np.random.rand() < self.prob else T.NoOpTransform()


def hed_jitter(rgb: np.ndarray, factors, shifts) -> np.ndarray:
    """An HxWx3 uint8 RGB image with its haematoxylin, eosin and DAB amounts changed: each
    channel of skimage's ``rgb2hed`` (colour deconvolution, Ruifrok and Johnston 2001) becomes
    ``factor * channel + shift``, and ``hed2rgb`` turns the result back into uint8 RGB, clipped.

    Without jitter (factors 1, shifts 0) the round trip keeps colours mixed from the three
    stains, but not others: ``rgb2hed`` clips negative stain amounts to 0, so a near-white
    (250, 250, 250) comes back as (250, 248, 250) and a mid grey (100, 100, 100) as (98, 72, 96),
    which is why grey images are never jittered."""
    hed = rgb2hed(rgb) * np.asarray(factors, dtype=np.float64) + np.asarray(shifts, dtype=np.float64)
    return np.round(np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)


class RandomIntensity(T.Augmentation):
    """Brightness, contrast and gamma from ranges of factors, then, with their probabilities,
    grey (colour dropped) and inversion, all in one uint8 pass over the image.

    With ``hed_jitter`` s > 0, a colour image (:func:`~.kinds.is_colour`; grey ones are left
    alone) first gets, with probability ``hed_prob``, a random stain change (:func:`hed_jitter`):
    each of its H, E and D channels scaled by a factor drawn uniformly from [1 - s, 1 + s] and
    shifted by one from [-s/10, s/10]. This is the HED colour augmentation of Tellez et al.
    (2018, whole-slide mitosis detection in H&E), which varies the stains as labs and scanners
    do; the shifts are a tenth of s because rgb2hed's stain amounts are small numbers (optical
    density over ln 10^6). ``image_format`` ("BGR" or "RGB", INPUT.FORMAT) says the channel order."""

    def __init__(self, brightness, contrast, gamma, grey_prob: float, invert_prob: float,
                 hed_jitter: float = 0.0, hed_prob: float = 0.5, image_format: str = "RGB"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        brightness = np.random.uniform(*self.brightness)
        contrast = np.random.uniform(*self.contrast)
        gamma = np.exp(np.random.uniform(*np.log(self.gamma)))
        grey = np.random.rand() < self.grey_prob
        invert = np.random.rand() < self.invert_prob
        values = np.arange(256, dtype=np.float32) / 255
        table = np.clip(((values**gamma - 0.5) * contrast + 0.5) * brightness, 0, 1)
        table = np.round(table * 255).astype(np.uint8)
        if invert:
            table = 255 - table
        stains = None  # drawn only when on, so that configs without it see the same random numbers
        if self.hed_jitter > 0 and np.random.rand() < self.hed_prob:
            s = self.hed_jitter
            stains = np.random.uniform(1 - s, 1 + s, 3), np.random.uniform(-s / 10, s / 10, 3)
        bgr = self.image_format == "BGR"

        def adjust(img: np.ndarray) -> np.ndarray:
            if stains is not None and img.ndim == 3 and img.shape[2] == 3 and is_colour(img):
                img = hed_jitter(img[..., ::-1] if bgr else img, *stains)
                img = np.ascontiguousarray(img[..., ::-1]) if bgr else img
            if grey and img.ndim == 3 and img.shape[2] == 3:
                img = np.repeat(img.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
            return table[img]

        return T.ColorTransform(adjust)


def build_nuclei_augmentations(cfg, is_train: bool) -> list:
    """The augmentations of ``cfg.INPUT`` (see the module docstring), in order: resize and crop
    (crop in training only), then in training the symmetries and the intensity changes."""
    if not is_train:
        if cfg.INPUT.RESIZE == "scale":
            return [RandomScale(cfg.INPUT.SCALE_TEST, cfg.INPUT.SCALE_TEST)]
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    crop = cfg.INPUT.CROP
    if cfg.INPUT.RESIZE == "scale" and crop.ENABLED:
        if crop.TYPE != "absolute":
            raise ValueError(f"INPUT.RESIZE 'scale' crops in model input pixels: set INPUT.CROP.TYPE "
                             f"to 'absolute', got {crop.TYPE!r}")
        augs = [RandomScaledCrop(*cfg.INPUT.SCALE_TRAIN, crop.SIZE)]
    elif cfg.INPUT.RESIZE == "scale":
        augs = [RandomScale(*cfg.INPUT.SCALE_TRAIN)]
    else:  # Detectron2's order: crop, then resize
        augs = [T.RandomCrop(crop.TYPE, crop.SIZE)] if crop.ENABLED else []
        augs.append(T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                         cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    if cfg.INPUT.DIHEDRAL:
        augs += [T.RandomFlip(horizontal=False, vertical=True), RandomTranspose()]
    intensity = cfg.INPUT.INTENSITY
    if intensity.ENABLED:
        augs.append(RandomIntensity(intensity.BRIGHTNESS, intensity.CONTRAST, intensity.GAMMA,
                                    intensity.GREY_PROB, intensity.INVERT_PROB,
                                    intensity.HED_JITTER, intensity.HED_PROB, cfg.INPUT.FORMAT))
    return augs
