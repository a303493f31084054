"""Dsb2018 -> COCO conversion on synthetic data: exact masks, split, CSV labels, polygons."""
import csv
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from sharp_fpn.data.coco_export import MIN_IMAGES_FOR_POOL, convert_dsb2018, mask_to_polygons
from sharp_fpn.data.kaggle_rle import kaggle_rle_encode
from sharp_fpn.data.synthetic import make_synthetic_dataset


def _png_masks(stage_dir, image_id):
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) > 0 for p in sorted((stage_dir / image_id / "masks").glob("*.png"))]


def _load(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    stage_dir = tmp_path_factory.mktemp("data") / "stage1_train"
    ids = make_synthetic_dataset(stage_dir, num_images=6, size=(64, 64), max_size=(96, 96), overlap_probability=0.0)
    return stage_dir, ids


@pytest.fixture(scope="module")
def converted(stage, tmp_path_factory):
    stage_dir, _ = stage
    output_dir = tmp_path_factory.mktemp("out")
    summary = convert_dsb2018(stage_dir, output_dir, val_fraction=1 / 3, workers=1)
    return summary, _load(output_dir / "train.json"), _load(output_dir / "val.json")


def test_counts_and_structure(stage, converted):
    stage_dir, ids = stage
    summary, train, val = converted
    assert summary.images == {"train": 4, "val": 2}
    num_masks = sum(len(_png_masks(stage_dir, i)) for i in ids)
    assert sum(summary.nuclei.values()) == len(train["annotations"]) + len(val["annotations"]) == num_masks
    for dataset in (train, val):
        assert dataset["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "nucleus"}]
        assert "info" in dataset  # pycocotools' loadRes copies it
        for image in dataset["images"]:
            assert set(image) == {"id", "file_name", "height", "width"}
            assert (stage_dir / image["file_name"]).is_file()  # relative to the stage folder
        for annotation in dataset["annotations"]:
            assert annotation["iscrowd"] == 0 and annotation["category_id"] == 1
            assert isinstance(annotation["segmentation"]["counts"], str)
    all_ids = [a["id"] for d in (train, val) for a in d["annotations"]]
    assert sorted(all_ids) == list(range(1, len(all_ids) + 1))  # unique across parts


def test_every_rle_equals_its_png(stage, converted):
    stage_dir, _ = stage
    _, train, val = converted
    for dataset in (train, val):
        for image in dataset["images"]:
            annotations = [a for a in dataset["annotations"] if a["image_id"] == image["id"]]
            decoded = [mask_util.decode(a["segmentation"]).astype(bool) for a in annotations]
            pngs = _png_masks(stage_dir, image["file_name"].split("/")[0])
            assert len(decoded) == len(pngs)
            for mask, png, annotation in zip(decoded, pngs, annotations):  # same order as the files
                np.testing.assert_array_equal(mask, png)
                ys, xs = np.nonzero(png)
                assert annotation["area"] == png.sum()
                assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_pycocotools_reads_it(converted, tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps(converted[2]))
    coco = COCO(str(path))
    annotation = coco.loadAnns(coco.getAnnIds())[0]
    assert coco.annToMask(annotation).sum() == annotation["area"]


def test_deterministic_and_seeded_split(stage, converted, tmp_path):
    stage_dir, ids = stage
    convert_dsb2018(stage_dir, tmp_path / "again", val_fraction=1 / 3, workers=1)
    again, first = _load(tmp_path / "again" / "val.json"), dict(converted[2])
    # The recorded image root is relative to each JSON's own folder; everything else is equal.
    assert (tmp_path / "again" / again.pop("info")["image_root"]).resolve() == stage_dir.resolve()
    first.pop("info")
    assert again == first
    val_sets = set()
    for seed in range(6):
        summary = convert_dsb2018(stage_dir, tmp_path / f"s{seed}", val_fraction=1 / 3, seed=seed, workers=1)
        val_sets.add(tuple(i["file_name"] for i in _load(summary.outputs["val"])["images"]))
    assert len(val_sets) > 1


def test_val_ids_file_and_parts(stage, tmp_path):
    stage_dir, ids = stage
    (tmp_path / "val.txt").write_text(f"# held out\n{ids[1]}\n\n{ids[4]}  # colour\n")
    summary = convert_dsb2018(stage_dir, tmp_path / "out", val_ids=tmp_path / "val.txt", workers=1)
    assert [i["file_name"].split("/")[0] for i in _load(tmp_path / "out" / "val.json")["images"]] == [ids[1], ids[4]]
    assert summary.images == {"train": 4, "val": 2} and not summary.issues

    summary = convert_dsb2018(stage_dir, tmp_path / "out", val_fraction=0.0, workers=1)
    assert list(summary.outputs) == ["train"] and summary.removed_stale == [tmp_path / "out" / "val.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.json"]

    summary = convert_dsb2018(stage_dir, tmp_path / "all_val", val_fraction=1.0, workers=1)
    assert sorted(p.name for p in (tmp_path / "all_val").iterdir()) == ["val.json"]
    assert "6 images" in str(summary) and "wrote" in str(summary)


def test_polygons_are_exact(stage, tmp_path):
    stage_dir, ids = stage
    convert_dsb2018(stage_dir, tmp_path, val_fraction=0.0, polygons=True, workers=1)
    dataset = _load(tmp_path / "train.json")
    for image in dataset["images"]:
        annotations = [a for a in dataset["annotations"] if a["image_id"] == image["id"]]
        for annotation, png in zip(annotations, _png_masks(stage_dir, image["file_name"].split("/")[0])):
            polygons = annotation["segmentation"]
            assert isinstance(polygons, list) and all(len(p) >= 6 for p in polygons)
            rle = mask_util.merge(mask_util.frPyObjects(polygons, image["height"], image["width"]))
            np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), png)


def test_polygons_of_tiny_and_split_masks():
    mask = np.zeros((8, 8), bool)
    mask[1, 1] = True  # one pixel
    mask[4:6, 3:7] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    np.testing.assert_array_equal(mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, 8, 8))), mask)


def _write_labels_csv(path, stage_dir, ids, with_size=False):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "EncodedPixels"] + (["Height", "Width", "Usage"] if with_size else []))
        for image_id in ids:
            for mask in _png_masks(stage_dir, image_id):
                writer.writerow([image_id, kaggle_rle_encode(mask)] + (list(mask.shape) + ["Public"] if with_size else []))
            if with_size:  # a stage 2 style decoy row, to be ignored
                writer.writerow([image_id, "1 1", 1, 1, "Ignored"])


@pytest.mark.parametrize("with_size", [False, True], ids=["train_labels", "solution"])
def test_labels_csv_gives_the_same_masks(stage, converted, tmp_path, with_size):
    stage_dir, ids = stage
    _write_labels_csv(tmp_path / "labels.csv", stage_dir, ids, with_size)
    summary = convert_dsb2018(
        stage_dir, tmp_path / "out", val_fraction=1 / 3, labels_csv=tmp_path / "labels.csv", workers=1
    )
    assert not summary.issues
    for part, expected in (("train", converted[1]), ("val", converted[2])):
        got = _load(tmp_path / "out" / f"{part}.json")
        assert got["images"] == expected["images"]
        assert [a["segmentation"] for a in got["annotations"]] == [a["segmentation"] for a in expected["annotations"]]


def test_process_pool_gives_the_same_json(tmp_path):
    make_synthetic_dataset(tmp_path / "stage", num_images=MIN_IMAGES_FOR_POOL, size=(32, 32))
    convert_dsb2018(tmp_path / "stage", tmp_path / "serial", workers=1)
    convert_dsb2018(tmp_path / "stage", tmp_path / "pool", workers=2)
    for part in ("train.json", "val.json"):
        assert _load(tmp_path / "pool" / part) == _load(tmp_path / "serial" / part)
