"""Synthetic Dsb2018-like data for demos and tests: the real layout and the real file kinds
(grey stored as RGBA, H&E-like colour, 16-bit PNG and TIFF), small enough to train on a CPU.

Nuclei are ellipses with clear contrast, touching (shared borders, as in Kaggle's masks) and now
and then overlapping, on a noisy background. Everything is drawn from ``seed`` and the image's
index, so a set is the same on every run.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import tifffile

# Cycled over the images, so any set of 4 or more holds every kind of file.
IMAGE_STYLES = ("grey_rgba", "colour_he", "grey16_png", "grey16_tif")

_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def make_synthetic_dataset(
    root: str | os.PathLike,
    num_images: int = 12,
    size: int | tuple[int, int] = (128, 128),
    max_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    styles: tuple[str, ...] = IMAGE_STYLES,
    overlap_probability: float = 0.03,
) -> list[str]:
    """Write ``root/<id>/images/<id>.png|.tif`` and ``root/<id>/masks/<k>.png`` (0/255) and
    return the ids in order.

    Args:
        size: (height, width) of every image (an int for squares), or the smallest when
            ``max_size`` is given; then each image's height and width are drawn from
            [size, max_size].
        styles: file kinds to cycle through, from :data:`IMAGE_STYLES`.
        overlap_probability: chance that a nucleus placed against others keeps its overlap
            rather than being trimmed to touch; 0 gives non-overlapping masks.
    """
    unknown = set(styles) - set(IMAGE_STYLES)
    if unknown or not styles:
        raise ValueError(f"styles must be among {IMAGE_STYLES}, got {styles}")
    root = Path(root)
    ids = []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        low, high = np.broadcast_to(size, 2), np.broadcast_to(max_size if max_size is not None else size, 2)
        height, width = (int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high))
        masks = _place_nuclei(rng, height, width, overlap_probability)
        image_id = f"synthetic-s{seed}-{index:04d}"
        _write_sample(root / image_id, image_id, _render(rng, masks, height, width), masks, styles[index % len(styles)])
        ids.append(image_id)
    return ids


def _place_nuclei(rng: np.random.Generator, height: int, width: int, overlap_probability: float) -> list[np.ndarray]:
    """Boolean masks of ellipses, 6-30 px across, covering 10-25% of the image."""
    # Nuclei of one image have similar sizes (one magnification), as in the real data.
    typical_radius = rng.uniform(4.5, 11.0)
    target_cover = rng.uniform(0.10, 0.25) * height * width
    occupied = np.zeros((height, width), dtype=bool)
    masks, centres, radii = [], [], []
    covered = 0
    for _ in range(300):
        if covered >= target_cover:
            break
        semi_major = float(np.clip(typical_radius * rng.uniform(0.75, 1.3), 3.0, 15.0))
        semi_minor = max(3.0, semi_major * rng.uniform(0.6, 1.0))
        radius = (semi_major + semi_minor) / 2
        if masks and rng.random() < 0.5:  # against a neighbour: touching or overlapping
            neighbour = int(rng.integers(len(masks)))
            angle = rng.uniform(0, 2 * np.pi)
            distance = (radii[neighbour] + radius) * rng.uniform(0.8, 1.0)
            centre = centres[neighbour] + distance * np.array([np.cos(angle), np.sin(angle)])
        else:
            centre = rng.uniform((0, 0), (width, height))
        # Draw in a window around the centre: full-image operations per nucleus are slow.
        x, y = int(round(centre[0])), int(round(centre[1]))
        half = int(np.ceil(semi_major)) + 1
        top, left = max(0, y - half), max(0, x - half)
        bottom, right = min(height, y + half + 1), min(width, x + half + 1)
        if bottom <= top or right <= left:
            continue
        window = np.zeros((bottom - top, right - left), dtype=np.uint8)
        axes = (int(round(semi_major)), int(round(semi_minor)))
        cv2.ellipse(window, (x - left, y - top), axes, rng.uniform(0, 180), 0, 360, 1, -1)
        shape = window.astype(bool)
        area = int(shape.sum())
        taken = occupied[top:bottom, left:right]
        shared = int(np.count_nonzero(shape & taken))
        if area < 12 or shared > 0.3 * area:
            continue
        if shared and rng.random() >= overlap_probability:
            shape &= ~taken  # trim to touch, as most Kaggle masks do
            # One contour in CCOMP mode: still one piece, and no hole where a neighbour was.
            pieces = cv2.findContours(shape.view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)[0]
            if shape.sum() < 0.7 * area or len(pieces) != 1:
                continue
        mask = np.zeros((height, width), dtype=bool)
        mask[top:bottom, left:right] = shape
        taken |= shape
        covered += int(shape.sum())
        masks.append(mask)
        centres.append(centre)
        radii.append(radius)
    return masks


def _render(rng: np.random.Generator, masks: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Float image in [0, 1]: dim noisy background, nuclei of varying brightness and texture."""
    nuclei = np.zeros((height, width), dtype=np.float32)
    for mask in masks:
        nuclei[mask] = np.maximum(nuclei[mask], rng.uniform(0.45, 1.0))
    texture = cv2.GaussianBlur(rng.normal(1.0, 0.15, (height, width)).astype(np.float32), (0, 0), 1.5)
    nuclei = cv2.GaussianBlur(nuclei * texture, (0, 0), 0.7)
    background = rng.uniform(0.02, 0.12)
    image = background + nuclei + rng.normal(0.0, 0.03, (height, width)).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def _write_sample(folder: Path, image_id: str, image: np.ndarray, masks: list[np.ndarray], style: str) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    image_path = folder / "images" / image_id
    grey8 = (image * 255 + 0.5).astype(np.uint8)
    grey16 = (100 + image * 3000 + 0.5).astype(np.uint16)  # 12-bit camera with a dark offset
    if style == "grey_rgba":
        rgba = np.dstack([grey8, grey8, grey8, np.full_like(grey8, 255)])
        cv2.imwrite(f"{image_path}.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), _PNG_FAST)
    elif style == "colour_he":
        # Dark purple nuclei on a light pink background, as in H&E stained tissue.
        paper, stain = np.array([0.93, 0.84, 0.89]), np.array([0.30, 0.18, 0.50])
        rgb = paper * (1 - image[..., None]) + stain * image[..., None]
        bgr = (np.clip(rgb, 0, 1)[..., ::-1] * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(f"{image_path}.png", bgr, _PNG_FAST)
    elif style == "grey16_png":
        cv2.imwrite(f"{image_path}.png", grey16, _PNG_FAST)
    else:
        tifffile.imwrite(f"{image_path}.tif", grey16)
    for index, mask in enumerate(masks):
        cv2.imwrite(str(folder / "masks" / f"{index:03d}.png"), mask.astype(np.uint8) * 255, _PNG_FAST)
