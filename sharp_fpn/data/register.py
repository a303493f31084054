"""Dataset registration for Detectron2: by name for the conventional Dsb2018 layout, or any
COCO nuclei JSON by path.

Names are registered when this module is imported (``import sharp_fpn`` does it), because
Detectron2's ``launch`` starts fresh worker processes that know only what their imports
register. Registration is lazy: a JSON is read when the dataset is first used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

DATASETS_ENV = "SHARP_FPN_DATASETS"
DEFAULT_DATASETS_ROOT = "datasets"
THING_CLASSES = ["nucleus"]

# name -> (COCO JSON, image root), relative to the datasets root; the JSONs are what
# datasets/prepare_dsb2018.py writes with --output-dir dsb2018/annotations/<stage>.
DSB2018_DATASETS = {
    "dsb2018_train": ("dsb2018/annotations/stage1_train/train.json", "dsb2018/stage1_train"),
    "dsb2018_val": ("dsb2018/annotations/stage1_train/val.json", "dsb2018/stage1_train"),
    "dsb2018_stage1_test": ("dsb2018/annotations/stage1_test/val.json", "dsb2018/stage1_test"),
}


def datasets_root() -> Path:
    """``$SHARP_FPN_DATASETS``, else ``datasets`` (relative to the working directory, as
    Detectron2's own ``DETECTRON2_DATASETS``)."""
    return Path(os.environ.get(DATASETS_ENV, DEFAULT_DATASETS_ROOT))


def recorded_image_root(json_file: str | os.PathLike) -> Path | None:
    """The stage folder that :func:`~.coco_export.convert_dsb2018` recorded in a JSON
    (``info.image_root``, relative to the JSON's folder), or None for other JSONs."""
    with open(json_file) as handle:
        try:
            info = json.load(handle).get("info") or {}
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{json_file}: not a COCO JSON file ({error})") from None
    root = info.get("image_root") if isinstance(info, dict) else None
    return Path(os.path.normpath(Path(json_file).parent / root)) if root else None


def register_coco_nuclei(
    name: str,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    evaluator_type: str = "coco",
) -> None:
    """Register a COCO nuclei JSON (as written by :func:`~.coco_export.convert_dsb2018`) under
    ``name``, replacing any earlier registration of that name, so calling it twice is harmless.

    ``file_name`` in the JSON are relative to ``image_root``; by default the folder recorded
    in the JSON (:func:`recorded_image_root`), else the JSON's own folder. The default reads the
    JSON now; with a root given, nothing is read before the dataset is first used.
    """
    if image_root is None:
        image_root = recorded_image_root(json_file) or Path(json_file).parent
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type=evaluator_type, thing_classes=list(THING_CLASSES)
    )


def register_dsb2018(root: str | os.PathLike | None = None) -> list[str]:
    """Register :data:`DSB2018_DATASETS` under ``root`` (default :func:`datasets_root`) and
    return their names. Missing files only fail when a dataset is used."""
    root = Path(root) if root is not None else datasets_root()
    for name, (json_file, image_root) in DSB2018_DATASETS.items():
        register_coco_nuclei(name, root / json_file, root / image_root)
    return list(DSB2018_DATASETS)


register_dsb2018()
