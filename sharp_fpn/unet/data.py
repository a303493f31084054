"""Semantic targets for the UNet family: Dsb2018 images with their nuclei merged into one
foreground mask, resized to the seed's training size (96x96), held in memory.

The seed trains on whole images resized to 96x96 (its Dsb2018 protocol), so the full set is
about 20 MB: it is read once (reading 26k mask PNGs takes minutes), cached as one .npz and
then served from arrays. The Dsb2018 folder layout and file checks are sharp_fpn.data's.
"""
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np


logger = logging.getLogger(__name__)

# ImageNet RGB statistics on a 0..255 scale (the seed normalises with them).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass
class SemanticSet:
    """``images`` (N, S, S, 3) uint8 RGB, ``masks`` (N, S, S) uint8 in {0, 1}, ``ids`` (N)."""

    images: np.ndarray
    masks: np.ndarray
    ids: List[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Sequence[str]) -> "SemanticSet":
        index = {image_id: k for k, image_id in enumerate(self.ids)}
        rows = [index[image_id] for image_id in ids]
        return SemanticSet(self.images[rows], self.masks[rows], list(ids))

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> Tuple["SemanticSet", "SemanticSet"]:
        """Deterministic (train, val) split by id, the project's ``split_ids``."""
        from ..data.split import split_ids

        train_ids, val_ids = split_ids(self.ids, val_fraction, seed)
        return self.subset(train_ids), self.subset(val_ids)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Area-resize the image, and the mask as a coverage fraction thresholded at one half
    (nearest-neighbour would drop or fatten 1-3 px nuclei at random when shrinking ~4x)."""
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return image, (coverage >= 0.5).astype(np.uint8)


def merged_foreground(record) -> np.ndarray:
    """Union of an image's nucleus masks (an ``ImageRecord`` of sharp_fpn.data.dsb2018)."""
    import pycocotools.mask as mask_util

    foreground = np.zeros((record.height, record.width), dtype=np.uint8)
    for instance in record.instances:
        foreground |= mask_util.decode(instance.rle).astype(np.uint8)
    return foreground


def read_dsb2018_semantic(stage_dir, size: int = 96) -> SemanticSet:
    """Read a Dsb2018 stage folder into a ``SemanticSet``, skipping unreadable images."""
    # Imported here: a cached set (and a training machine without pycocotools) needs none.
    from ..data.dsb2018 import find_samples, read_sample
    from ..data.image_io import read_image

    samples, issues = find_samples(stage_dir)
    for issue in issues:
        logger.warning("%s", issue)
    images, masks, ids = [], [], []
    for sample in samples:
        record = read_sample(sample)
        if record.height is None:
            logger.warning("%s: unreadable, skipped", sample.image_path)
            continue
        image, mask = resize_pair(read_image(sample.image_path, format="RGB"), merged_foreground(record), size)
        images.append(image)
        masks.append(mask)
        ids.append(sample.image_id)
    return SemanticSet(np.stack(images), np.stack(masks), ids)


def cache_path(cache_dir, stage_dir, size: int) -> Path:
    """One cache file per (stage folder, size)."""
    tag = hashlib.sha256(str(Path(stage_dir).resolve()).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"dsb2018_semantic_{size}px_{tag}.npz"


def load_dsb2018_semantic(stage_dir, size: int = 96, cache_dir: Optional[str] = None) -> SemanticSet:
    """``read_dsb2018_semantic`` through an .npz cache in ``cache_dir`` (none if not given)."""
    path = cache_path(cache_dir, stage_dir, size) if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as cached:
            return SemanticSet(cached["images"], cached["masks"], [str(i) for i in cached["ids"]])
    data = read_dsb2018_semantic(stage_dir, size)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, images=data.images, masks=data.masks, ids=np.array(data.ids))
        partial.replace(path)
    return data


def synthetic_semantic_set(num_images: int = 8, size: int = 64, seed: int = 0) -> SemanticSet:
    """Dark images with a few bright, noisy elliptic blobs: a stand-in with the right shapes
    for tests and smoke runs (learnable in a few steps, no files needed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((num_images, size, size, 3), dtype=np.uint8)
    masks = np.zeros((num_images, size, size), dtype=np.uint8)
    for n in range(num_images):
        for _ in range(rng.integers(1, 6)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 16, size / 6, 2)
            masks[n] |= (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
        grey = 30 + 170 * masks[n] + rng.normal(0, 15, (size, size))
        images[n] = np.clip(grey, 0, 255).astype(np.uint8)[..., None]
    return SemanticSet(images, masks, [f"synthetic_{n:04d}" for n in range(num_images)])
