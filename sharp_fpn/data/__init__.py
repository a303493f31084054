"""Data layer: Dsb2018 reading and COCO conversion, synthetic data, the image reader, the
Detectron2 mapper and dataset registration (importing this registers the dsb2018_* names)."""
from .coco_export import ConversionSummary, convert_dsb2018, encode_mask, mask_to_polygons
from .dsb2018 import find_samples, read_labels_csv, read_sample
from .image_io import IMAGE_EXTENSIONS, load_image_array, read_image, to_rgb_uint8
from .issues import ISSUE_KINDS, DatasetError, Issue
from .kaggle_rle import kaggle_rle_decode, kaggle_rle_encode
from .mapper import NucleiDatasetMapper
from .register import DSB2018_DATASETS, datasets_root, register_coco_nuclei, register_dsb2018
from .split import split_ids
from .synthetic import IMAGE_STYLES, make_synthetic_dataset

__all__ = [
    "ConversionSummary",
    "DSB2018_DATASETS",
    "DatasetError",
    "IMAGE_EXTENSIONS",
    "IMAGE_STYLES",
    "ISSUE_KINDS",
    "Issue",
    "NucleiDatasetMapper",
    "convert_dsb2018",
    "datasets_root",
    "encode_mask",
    "find_samples",
    "kaggle_rle_decode",
    "kaggle_rle_encode",
    "load_image_array",
    "make_synthetic_dataset",
    "mask_to_polygons",
    "read_image",
    "read_labels_csv",
    "read_sample",
    "register_coco_nuclei",
    "register_dsb2018",
    "split_ids",
    "to_rgb_uint8",
]
