"""Dataset registration: by JSON path, idempotent, the image root the converter records, and the
conventional dsb2018_* names."""
import importlib
import json
import shutil
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from sharp_fpn.data import register
from sharp_fpn.data.coco_export import convert_dsb2018
from sharp_fpn.data.register import DSB2018_DATASETS, recorded_image_root, register_coco_nuclei, register_dsb2018
from sharp_fpn.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("register")
    make_synthetic_dataset(root / "stage", num_images=3, size=(40, 40), overlap_probability=0.0)
    convert_dsb2018(root / "stage", root / "json", val_fraction=0.0, workers=1)
    return root


def test_register_by_path_is_idempotent(converted):
    for _ in range(2):
        register_coco_nuclei("test_nuclei_set", converted / "json" / "train.json", converted / "stage")
    dicts = DatasetCatalog.get("test_nuclei_set")
    assert len(dicts) == 3
    first = dicts[0]
    assert first["file_name"].startswith(str(converted / "stage"))
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0}  # contiguous ids
    assert isinstance(first["annotations"][0]["segmentation"], dict)  # RLE kept as RLE
    metadata = MetadataCatalog.get("test_nuclei_set")
    assert metadata.thing_classes == ["nucleus"]
    assert metadata.evaluator_type == "coco"
    assert metadata.json_file == str(converted / "json" / "train.json")
    assert metadata.image_root == str(converted / "stage")


def test_reregistering_moves_a_name(converted, tmp_path):
    register_coco_nuclei("test_nuclei_moved", tmp_path / "old.json", tmp_path)
    register_coco_nuclei("test_nuclei_moved", converted / "json" / "train.json", converted / "stage")
    assert MetadataCatalog.get("test_nuclei_moved").image_root == str(converted / "stage")
    assert len(DatasetCatalog.get("test_nuclei_moved")) == 3


def test_conventional_names_follow_the_env_var(converted, monkeypatch):
    assert set(DSB2018_DATASETS) <= set(DatasetCatalog.list())  # registered at import
    monkeypatch.setenv("SHARP_FPN_DATASETS", str(converted))
    assert register.datasets_root() == converted
    names = register_dsb2018()
    assert names == ["dsb2018_train", "dsb2018_val", "dsb2018_stage1_test"]
    assert MetadataCatalog.get("dsb2018_train").json_file == str(
        converted / "dsb2018" / "annotations" / "stage1_train" / "train.json"
    )
    assert MetadataCatalog.get("dsb2018_val").image_root == str(converted / "dsb2018" / "stage1_train")
    monkeypatch.delenv("SHARP_FPN_DATASETS")
    register_dsb2018()  # back to the default root for the other tests
    assert MetadataCatalog.get("dsb2018_train").image_root == "datasets/dsb2018/stage1_train"


def test_module_reimport_is_harmless():
    importlib.reload(register)
    assert "dsb2018_train" in DatasetCatalog.list()


def test_the_converter_records_its_stage_folder(converted, tmp_path):
    json_file = converted / "json" / "train.json"
    assert json.loads(json_file.read_text())["info"]["image_root"] == "../stage"  # relative: moves with the pair
    assert recorded_image_root(json_file) == converted / "stage"
    register_coco_nuclei("test_nuclei_recorded", json_file)
    assert MetadataCatalog.get("test_nuclei_recorded").image_root == str(converted / "stage")
    assert all(Path(d["file_name"]).is_file() for d in DatasetCatalog.get("test_nuclei_recorded"))

    moved = tmp_path / "moved"
    shutil.copytree(converted, moved)
    assert recorded_image_root(moved / "json" / "train.json") == moved / "stage"


def test_a_json_without_a_recorded_root_defaults_to_its_folder(converted, tmp_path):
    dataset = json.loads((converted / "json" / "train.json").read_text())
    del dataset["info"]["image_root"]
    (tmp_path / "old.json").write_text(json.dumps(dataset))
    assert recorded_image_root(tmp_path / "old.json") is None
    register_coco_nuclei("test_nuclei_old", tmp_path / "old.json")
    assert MetadataCatalog.get("test_nuclei_old").image_root == str(tmp_path)
