"""Detectron2's DatasetMapper with our image reader, so 16-bit and RGBA microscopy images reach
the model as the evaluator and the predictor see them."""
from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augment import build_nuclei_augmentations
from .image_io import DEFAULT_PERCENTILES, load_image_array, read_image
from .kinds import bright_nuclei


class NucleiDatasetMapper(DatasetMapper):
    """``NucleiDatasetMapper(cfg, is_train)``: :class:`DatasetMapper` (same config keys) with
    the nuclei input pipeline of :mod:`.augment`, reading images with :func:`~.image_io.read_image` instead of Detectron2's
    PIL reader, which saturates 16-bit images.

    With ``INPUT.BRIGHT_NUCLEI`` ("grey" or "all"), an image whose background is bright is
    inverted as read, before any crop or augmentation, so the rule sees the whole image
    (:func:`~.kinds.needs_inversion`), as :class:`~sharp_fpn.predict.NucleiPredictor` does.

    COCO RLE annotations need ``INPUT.MASK_FORMAT "bitmask"``; this mapper says so instead of
    failing deep inside Detectron2.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        normalize_uint8: bool = False,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        bright_nuclei: str = "",
        **kwargs,
    ):
        super().__init__(is_train, **kwargs)
        self.normalize_uint8 = normalize_uint8
        self.percentiles = percentiles
        self.bright_nuclei = bright_nuclei

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        """DatasetMapper's arguments, with the nuclei input pipeline (``INPUT.RESIZE``, crops,
        symmetries, intensity; see :mod:`.augment`) instead of Detectron2's resize and flip.
        A plain Detectron2 config (without sharp_fpn's INPUT keys) keeps Detectron2's."""
        kwargs = super().from_config(cfg, is_train)
        if "RESIZE" in cfg.INPUT:
            kwargs["augmentations"] = build_nuclei_augmentations(cfg, is_train)
        kwargs["bright_nuclei"] = cfg.INPUT.get("BRIGHT_NUCLEI", "")
        return kwargs

    def __call__(self, dataset_dict: dict) -> dict:
        # Detectron2's DatasetMapper.__call__ has no hook for reading images, so this follows
        # its steps with our reader.
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], self.image_format, self.normalize_uint8, self.percentiles)
        utils.check_image_size(dataset_dict, image)
        image = bright_nuclei(image, self.bright_nuclei)  # decided on the whole image
        sem_seg_file = dataset_dict.pop("sem_seg_file_name", None)
        sem_seg = load_image_array(sem_seg_file) if sem_seg_file is not None else None

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._check_mask_format(dataset_dict["annotations"])
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def _check_mask_format(self, annotations: list[dict]) -> None:
        if not self.use_instance_mask or self.instance_mask_format != "polygon":
            return
        if any(isinstance(annotation.get("segmentation"), dict) for annotation in annotations):
            raise ValueError(
                "annotations hold COCO RLE masks (the converter's default): set INPUT.MASK_FORMAT "
                "to 'bitmask', or convert with --polygons"
            )
