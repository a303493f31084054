"""Every output format describes the same objects as the label image: same count, same order,
same pixels (exactly, where the format is exact)."""
import csv
import json
import zipfile

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import roifile
import tifffile

from sharp_fpn.data.kaggle_rle import kaggle_rle_decode, kaggle_rle_encode
from sharp_fpn.predict import object_table
from sharp_fpn.predict import writers as W

# pycocotools 2.0 decode on numpy 2 (its own code, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def awkward_labels():
    """Touching ellipses, plus the hard cases: a hole, a diagonal pinch, a full-height column
    (its Kaggle runs join across columns), objects on every image edge, a single pixel."""
    rng = np.random.default_rng(3)
    height, width = 70, 90
    labels = np.zeros((height, width), np.uint16)
    count = 0

    def add(mask):
        nonlocal count
        mask = mask & (labels == 0)
        if mask.any():
            count += 1
            labels[mask] = count

    for _ in range(25):
        canvas = np.zeros((height, width), np.uint8)
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(2, 9)), int(rng.integers(2, 7)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        add(canvas.astype(bool))
    ring = np.zeros((height, width), bool)
    ring[30:37, 40:47] = True
    ring[32:35, 42:45] = False
    labels[30:37, 40:47] = 0
    add(ring)
    pinch = np.zeros((height, width), bool)
    pinch[60, 60] = pinch[61, 61] = pinch[62, 60] = True
    labels[59:64, 59:63] = 0
    add(pinch)
    labels[:, 88:90] = 0
    column = np.zeros((height, width), bool)
    column[:, 88:90] = True
    add(column)
    labels[10, 20] = 0
    dot = np.zeros((height, width), bool)
    dot[10, 20] = True
    labels[9:12, 19:22][labels[9:12, 19:22] > 0] = 0
    add(dot)
    # Relabel 1..n in order of first appearance so the labels have no gaps.
    present = np.unique(labels)[1:]
    lookup = np.zeros(labels.max() + 1, np.uint16)
    lookup[present] = np.arange(1, len(present) + 1)
    return lookup[labels]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("writers")
    labels = awkward_labels()
    n = int(labels.max())
    scores = np.linspace(0.99, 0.5, n).astype(np.float32)
    intensity = np.random.default_rng(0).integers(0, 4000, labels.shape).astype(np.uint16)
    image = np.zeros(labels.shape + (3,), np.uint8)
    table = object_table(labels, scores, intensity)
    W.write_label_tiff(folder / "a_labels.tif", labels)
    W.write_overlay_png(folder / "a_overlay.png", image, labels)
    W.write_objects_csv(folder / "a_objects.csv", table, "a", "in/a.png")
    W.write_geojson(folder / "a.geojson", labels, scores)
    W.write_imagej_zip(folder / "a_rois.zip", labels)
    W.write_kaggle_csv(folder / "submission.csv", W.kaggle_rows("a", labels))
    W.write_coco_json(folder / "coco_results.json", W.coco_results(7, labels, scores, "a.png"))
    return folder, labels, scores


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_label_tiff_and_overlay(written):
    folder, labels, _ = written
    read = tifffile.imread(folder / "a_labels.tif")
    assert read.dtype == np.uint16 and np.array_equal(read, labels)
    overlay = cv2.imread(str(folder / "a_overlay.png"))[..., ::-1]
    outline = np.all(overlay == W.OUTLINE_COLOUR, axis=2)
    assert outline[labels > 0].mean() > 0.4 and not outline[labels == 0].any()
    for label in range(1, labels.max() + 1):  # every object has an outline
        assert outline[labels == label].any()


def test_overlay_stretches_dim_images_and_rings_objects_with_a_dark_halo():
    labels = np.zeros((12, 12), np.uint16)
    labels[3:9, 3:9] = 1
    dim = np.full((12, 12, 3), 5, np.uint8)
    dim[labels > 0] = 40  # a dim 8-bit nucleus
    overlay = W.overlay_outlines(dim, labels)
    assert overlay[5, 5].tolist() == [255, 255, 255] and overlay[0, 0].tolist() == [0, 0, 0]  # stretched
    assert overlay[3, 5].tolist() == list(W.OUTLINE_COLOUR)  # the object's border pixels
    bright = np.full((12, 12, 3), 120, np.uint8)
    bright[labels > 0] = 255  # a bright nucleus: the outline and a dark ring around it show
    bright[11, 11] = 0  # a black pixel, so the stretch keeps the background grey
    overlay = W.overlay_outlines(bright, labels)
    assert overlay[3, 5].tolist() == list(W.OUTLINE_COLOUR) and overlay[4, 5].tolist() == [255, 255, 255]
    assert overlay[2, 5].max() < 0.5 * overlay[0, 0].max()  # the halo, just outside
    assert np.array_equal(W.overlay_outlines(np.full((4, 4, 3), 9, np.uint8), np.zeros((4, 4), np.uint16)),
                          np.full((4, 4, 3), 9, np.uint8))  # a flat image is left as it is


def test_formats_agree_on_count_order_and_pixels(written):
    folder, labels, scores = written
    n = int(labels.max())
    masks = [labels == k for k in range(1, n + 1)]
    table = read_csv(folder / "a_objects.csv")
    kaggle = read_csv(folder / "submission.csv")
    coco = json.loads((folder / "coco_results.json").read_text())
    features = json.loads((folder / "a.geojson").read_text())["features"]
    rois = roifile.roiread(folder / "a_rois.zip")
    assert len(table) == len(kaggle) == len(coco) == len(features) == len(rois) == n
    assert len(masks) > 20

    for k, mask in enumerate(masks, start=1):
        rows, cols = np.nonzero(mask)
        row = table[k - 1]
        assert int(row["label"]) == k and row["image"] == "a" and row["source"] == "in/a.png"
        assert int(row["area"]) == mask.sum()
        assert float(row["centroid_y"]) == pytest.approx(rows.mean()) and float(row["centroid_x"]) == pytest.approx(cols.mean())
        assert float(row["score"]) == pytest.approx(float(scores[k - 1]))

        assert kaggle[k - 1]["ImageId"] == "a"
        assert kaggle[k - 1]["EncodedPixels"] == kaggle_rle_encode(mask)
        assert np.array_equal(kaggle_rle_decode(kaggle[k - 1]["EncodedPixels"], *labels.shape), mask)

        result = coco[k - 1]
        assert result["label"] == k and result["image_id"] == 7 and result["file_name"] == "a.png"
        assert np.array_equal(mask_util.decode(result["segmentation"]).astype(bool), mask)
        assert result["area"] == mask.sum() and result["score"] == pytest.approx(float(scores[k - 1]))
        assert result["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]

        feature = features[k - 1]
        assert feature["properties"]["measurements"]["label"] == k
        assert feature["geometry"]["type"] == "Polygon"
        rings = [np.array(r) for r in feature["geometry"]["coordinates"]]
        assert all(np.array_equal(r[0], r[-1]) for r in rings)  # closed, as GeoJSON wants
        area = sum(W.signed_area(r[:-1]) for r in rings)
        assert area == mask.sum()  # pixel-edge outlines: exact area, holes included
        exterior = rings[0][:-1]
        assert exterior[:, 0].min() == cols.min() and exterior[:, 0].max() == cols.max() + 1
        assert exterior[:, 1].min() == rows.min() and exterior[:, 1].max() == rows.max() + 1

        roi = rois[k - 1]
        assert int(roi.name) == k and roi.roitype == roifile.ROI_TYPE.TRACED
        assert np.array_equal(roi.coordinates(), rings[0][:-1])  # the GeoJSON exterior
        holes = sum(-W.signed_area(r[:-1]) for r in rings[1:])
        assert W.signed_area(roi.coordinates()) == mask.sum() + holes


def test_polygon_centroid_is_the_pixel_centroid_shifted_half_a_pixel(written):
    folder, labels, _ = written
    features = json.loads((folder / "a.geojson").read_text())["features"]
    ring = np.array(features[0]["geometry"]["coordinates"][0][:-1], dtype=float)
    x, y = ring[:, 0], ring[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    centre = np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (3 * cross.sum())
    rows, cols = np.nonzero(labels == 1)
    assert centre == pytest.approx([cols.mean() + 0.5, rows.mean() + 0.5])


def test_qupath_properties(written):
    folder, _, _ = written
    collection = json.loads((folder / "a.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    properties = collection["features"][0]["properties"]
    assert properties["objectType"] == "detection" and properties["classification"]["name"] == "nucleus"
    annotations = W.geojson_features(np.ones((3, 3), np.uint16), np.array([0.5]), "annotation")
    assert annotations[0]["properties"]["objectType"] == "annotation"
    with pytest.raises(ValueError, match="objectType"):
        W.geojson_features(np.ones((3, 3), np.uint16), np.array([0.5]), "cell")


def test_empty_label_image_gives_empty_outputs(tmp_path):
    labels = np.zeros((16, 20), np.uint16)
    scores = np.zeros(0, np.float32)
    W.write_objects_csv(tmp_path / "e_objects.csv", object_table(labels, scores, labels), "e")
    W.write_geojson(tmp_path / "e.geojson", labels, scores)
    W.write_imagej_zip(tmp_path / "e_rois.zip", labels)
    assert (tmp_path / "e_objects.csv").read_text().count("\n") == 1  # the header only
    assert json.loads((tmp_path / "e.geojson").read_text()) == {"type": "FeatureCollection", "features": []}
    assert zipfile.ZipFile(tmp_path / "e_rois.zip").namelist() == []
    assert W.coco_results(1, labels, scores) == []
    assert W.kaggle_rows("e", labels) == [("e", "")]  # Kaggle lists every image


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "x_labels.tif"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with W.atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["x_labels.tif"]
    W.write_text_atomic(target, "new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1
