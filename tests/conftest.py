"""Shared test helpers: tiny Detectron2 configs and real training inputs."""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# One thread: tiny models gain nothing from more, and threads spin when cores are shared. The
# variable keeps it so in subprocesses and past sharp_fpn.engine.set_cpu_threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def _coco_backends():
    from sharp_fpn.evaluation.metrics import faster_coco_eval

    skip = pytest.mark.skipif(faster_coco_eval is None, reason="faster-coco-eval is not installed")
    return [pytest.param("faster-coco-eval", marks=skip), "pycocotools"]


# The COCO libraries the evaluator can use, for tests that must hold with either.
COCO_BACKENDS = _coco_backends()


def tiny_overrides(size: int = 64):
    """KEY VALUE overrides that shrink any shipped config to a fast CPU step."""
    return [
        "MODEL.DEVICE", "cpu",
        "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(size),
        "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(size),
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "TEST.DETECTIONS_PER_IMAGE", "10",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    ]


def nuclei_batch(n_images: int = 2, size: int = 64, seed: int = 0):
    """Real Detectron2 training inputs: images with a few square 'nuclei' and their masks."""
    from detectron2.structures import BitMasks, Boxes, Instances

    rng = np.random.default_rng(seed)
    batch = []
    for _ in range(n_images):
        image = torch.full((3, size, size), 20.0)
        masks = []
        for _ in range(3):
            y, x = rng.integers(4, size - 16, size=2)
            h, w = rng.integers(6, 12, size=2)
            m = torch.zeros(size, size, dtype=torch.bool)
            m[y : y + h, x : x + w] = True
            image[:, m] = 200.0
            masks.append(m)
        masks = torch.stack(masks)
        inst = Instances((size, size))
        inst.gt_masks = BitMasks(masks)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        inst.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
        batch.append({"image": image, "instances": inst, "height": size, "width": size})
    return batch


@pytest.fixture
def batch():
    return nuclei_batch()


@pytest.fixture(scope="session")
def predict_cli():
    """tools/predict.py as a module, so that tests call its ``main(argv)`` in-process."""
    spec = importlib.util.spec_from_file_location("predict_tool", Path(__file__).resolve().parent.parent / "tools" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_val_dataset(root: Path, cases) -> Path:
    """Dsb2018-style images (<id>/images/<id>.png under root/stage) and root/ann/val.json, a COCO
    JSON of their nuclei as the converter writes it (compressed RLE, info.image_root). ``cases``:
    (name, background grey level, list of HxW boolean masks); each nucleus is painted in the
    background's opposite grey."""
    import cv2
    import json
    import pycocotools.mask as mask_util

    from sharp_fpn.data.coco_export import encode_mask

    images, annotations = [], []
    for image_id, (name, background, masks) in enumerate(cases, start=1):
        height, width = masks[0].shape
        pixels = np.full((height, width), background, np.uint8)
        for mask in masks:
            pixels[mask] = 255 - background
        folder = root / "stage" / name / "images"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / f"{name}.png"), pixels)
        images.append({"id": image_id, "file_name": f"{name}/images/{name}.png", "height": height, "width": width})
        for mask in masks:
            box = mask_util.toBbox(mask_util.encode(np.asfortranarray(mask.astype(np.uint8))))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "segmentation": encode_mask(mask), "area": float(mask.sum()),
                                "bbox": [float(v) for v in box]})
    path = root / "ann" / "val.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"info": {"image_root": "../stage"}, "images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "nucleus"}]}))
    return path
