"""Dsb2018 semantic targets as Detectron2 datasets, and the mapper that feeds SemanticUNet.

The datasets "dsb2018_semantic_train" / "dsb2018_semantic_val" are registered from the config
(root, size, split), since their content depends on it. Each record carries its resized image
and merged mask as arrays, so workers only augment and convert.
"""
from typing import Dict, List

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from .augment import augment
from .data import SemanticSet, load_dsb2018_semantic, synthetic_semantic_set

TRAIN_NAME = "dsb2018_semantic_train"
VAL_NAME = "dsb2018_semantic_val"
SYNTHETIC = "synthetic"


def semantic_sets(cfg):
    """(train, val) ``SemanticSet``s described by ``cfg.DATASETS.DSB2018_SEMANTIC``."""
    spec = cfg.DATASETS.DSB2018_SEMANTIC
    size = cfg.INPUT.UNET.SIZE
    if spec.ROOT == SYNTHETIC:
        data = synthetic_semantic_set(16, size, seed=spec.SPLIT_SEED)
    else:
        data = load_dsb2018_semantic(spec.ROOT, size, spec.CACHE_DIR or None)
    return data.split(spec.VAL_FRACTION, spec.SPLIT_SEED)


def to_records(data: SemanticSet) -> List[Dict]:
    return [
        {"image_id": image_id, "image": image, "sem_seg": mask, "height": mask.shape[0], "width": mask.shape[1]}
        for image_id, image, mask in zip(data.ids, data.images, data.masks)
    ]


def register_semantic_dsb2018(cfg) -> None:
    """(Re-)register the two datasets for ``cfg``; the folder is read on first use only."""
    cache = {}

    def split(index: int) -> List[Dict]:
        if "sets" not in cache:
            cache["sets"] = semantic_sets(cfg)
        return to_records(cache["sets"][index])

    for index, name in enumerate((TRAIN_NAME, VAL_NAME)):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda index=index: split(index))
        MetadataCatalog.get(name).set(
            stuff_classes=["background", "nucleus"], root=cfg.DATASETS.DSB2018_SEMANTIC.ROOT, evaluator_type="unet"
        )


class SemanticMapper:
    """A record -> {"image": (3, S, S) float 0..255 RGB, "sem_seg": (S, S) long}, augmented
    with the seed's augmentation when ``augment_images``."""

    def __init__(self, augment_images: bool):
        self.augment_images = augment_images

    def __call__(self, record: Dict) -> Dict:
        image = torch.from_numpy(record["image"]).permute(2, 0, 1)[None].float() / 255
        mask = torch.from_numpy(record["sem_seg"])[None, None].float()
        if self.augment_images:
            image, mask = augment(image, mask)
        return {
            "image_id": record["image_id"],
            "image": image[0] * 255,
            "sem_seg": mask[0, 0].long(),
            "height": record["height"],
            "width": record["width"],
        }
