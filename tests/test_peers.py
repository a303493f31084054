"""benchmarks/peers: the label-image scorer and the peers' command lines, without the peers.

The scorer must give, for label images, exactly what sharp_fpn's metrics give for the same
masks; the peer scripts must parse and check their options, read the converter's JSON and write
label images the scorer reads, all without StarDist, TensorFlow or Cellpose installed.
"""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile

PEERS = Path(__file__).resolve().parent.parent / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))
import cellpose_peer  # noqa: E402
import peer_common as pc  # noqa: E402
import score  # noqa: E402
import stardist_peer  # noqa: E402

from conftest import write_val_dataset  # noqa: E402
from sharp_fpn.evaluation.metrics import coco_ap, encode_masks, evaluate_image  # noqa: E402

H, W = 48, 64


def _disc(cy, cx, r, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _ground_truth():
    """Per image (name, grey level of the background, list of GT masks)."""
    return [
        ("fluo1", 12, [_disc(10, 10, 5), _disc(30, 40, 7), _disc(20, 55, 4)]),
        ("fluo2", 20, [_disc(24, 20, 8)]),
        ("bright", 230, [_disc(15, 15, 6), _disc(35, 45, 6)]),
    ]


def _dataset(root: Path) -> Path:
    return write_val_dataset(root, _ground_truth())


def _predictions():
    """Per image: the predicted masks (a shifted nucleus, a missed one, a false one)."""
    return {
        "fluo1": [_disc(10, 11, 5), _disc(30, 40, 6), _disc(40, 8, 3)],
        "fluo2": [_disc(24, 20, 8)],
        "bright": [_disc(15, 16, 6)],
    }


def _write_labels(folder: Path, predictions: dict, scores: dict = None) -> None:
    for name, masks in predictions.items():
        labels = np.zeros((H, W), np.uint16)
        for k, mask in enumerate(masks, start=1):
            labels[mask & (labels == 0)] = k
        object_scores = {k: s for k, s in enumerate((scores or {}).get(name, [1.0] * len(masks)), start=1)}
        pc.write_label_outputs(folder, name, labels, object_scores, name)


def _score(tmp_path, labels_dir, *extra):
    out = tmp_path / "out"
    code = score.main([str(labels_dir), "--val-json", str(tmp_path / "ann" / "val.json"), "--output-dir", str(out),
                       "--name", "peer", *extra])
    return code, out


def test_scorer_matches_sharp_fpn_metrics(tmp_path):
    _dataset(tmp_path)
    predictions = _predictions()
    scores = {"fluo1": [0.9, 0.8, 0.3], "fluo2": [0.7], "bright": [0.6]}
    _write_labels(tmp_path / "labels", predictions, scores)
    code, out = _score(tmp_path, tmp_path / "labels")
    assert code == 0
    metrics = json.loads((out / "inference" / "peer_peer" / "metrics.json").read_text())
    expected, gt_all, detections, images = [], [], [], []
    for image_id, (name, _, gt) in enumerate(_ground_truth(), start=1):
        pred = encode_masks(predictions[name])
        expected.append(evaluate_image(encode_masks(gt), pred, scores[name]))
        images.append({"id": image_id, "height": H, "width": W})
        for mask in gt:
            rle = encode_masks([mask])[0]
            gt_all.append({"id": len(gt_all) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                           "segmentation": rle, "area": float(mask.sum()), "bbox": mask_util.toBbox(rle).tolist()})
        detections += [{"image_id": image_id, "category_id": 1, "score": s, "segmentation": r, "bbox": mask_util.toBbox(r).tolist()}
                       for r, s in zip(pred, scores[name])]
    rows = {row["image_id"]: row for row in metrics["per_image"]}
    for image_id, result in enumerate(expected, start=1):
        assert rows[image_id]["dsb_score"] == pytest.approx(result.dsb_score())
        assert rows[image_id]["fg_iou"] == pytest.approx(result.fg_iou)
        assert rows[image_id]["num_pred"] == result.num_pred
    assert metrics["segm"]["AP"] == pytest.approx(coco_ap(images, gt_all, detections, "segm")["AP"])
    assert 0 < metrics["nuclei"]["dsb_score"] < 1

    payload = json.loads((out / "peer_score.json").read_text())
    assert set(payload["groups"]) == {"all", "fluorescence", "brightfield"}
    assert payload["groups"]["brightfield"]["images"] == 1
    assert payload["groups"]["brightfield"]["nuclei"]["dsb_score"] == pytest.approx(expected[2].dsb_score())
    assert payload["groups"]["all"]["nuclei"]["dsb_score"] == pytest.approx(metrics["nuclei"]["dsb_score"])

    # The output folder is a RUN_DIR of benchmarks/by_image.py.
    sys.path.insert(0, str(PEERS.parent))
    import by_image

    assert set(by_image.per_image(out)) == {1, 2, 3}


def test_perfect_labels_score_perfectly_and_scores_rank_for_ap(tmp_path):
    _dataset(tmp_path)
    perfect = {name: masks for name, _, masks in _ground_truth()}
    _write_labels(tmp_path / "perfect", perfect)
    code, out = _score(tmp_path, tmp_path / "perfect")
    metrics = json.loads((out / "inference" / "peer_peer" / "metrics.json").read_text())
    assert code == 0 and metrics["nuclei"]["dsb_score"] == 1.0 and metrics["nuclei"]["fg_iou"] == 1.0
    assert metrics["segm"]["AP"] == pytest.approx(100.0)

    # A false object ranked last costs no AP, ranked first it does; the other metrics do not rank.
    with_false = {name: masks + ([_disc(40, 8, 3)] if name == "fluo1" else []) for name, masks in perfect.items()}
    aps = []
    for first in (False, True):
        scores = {name: [0.9] * len(m) for name, m in with_false.items()}
        scores["fluo1"][-1] = 0.99 if first else 0.1
        _write_labels(tmp_path / f"false_{first}", with_false, scores)
        code, out = _score(tmp_path, tmp_path / f"false_{first}")
        aps.append(json.loads((out / "peer_score.json").read_text())["groups"]["all"]["segm"]["AP"])
    assert aps[0] == pytest.approx(100.0) and aps[1] < 95.0


def test_missing_label_images_and_bad_files(tmp_path, capsys):
    _dataset(tmp_path)
    predictions = _predictions()
    del predictions["fluo2"]
    _write_labels(tmp_path / "labels", predictions)
    code, _ = _score(tmp_path, tmp_path / "labels")
    assert code == 1 and "no label image for 1 of the 3 images" in capsys.readouterr().err
    code, out = _score(tmp_path, tmp_path / "labels", "--only-predicted")
    assert code == 0 and json.loads((out / "peer_score.json").read_text())["images"] == 2

    # Without the objects CSV every object scores 1; a label image of the wrong size is an error.
    (tmp_path / "labels" / "bright_objects.csv").unlink()
    labels = tifffile.imread(tmp_path / "labels" / "bright_labels.tif")
    assert score.read_scores(tmp_path / "labels" / "bright_objects.csv", labels).tolist() == [1.0]
    tifffile.imwrite(tmp_path / "labels" / "bright_labels.tif", np.zeros((10, 10), np.uint16))
    code, _ = _score(tmp_path, tmp_path / "labels", "--only-predicted")
    assert code == 1 and "10x10 px, its image is 64x48" in capsys.readouterr().err


def test_speed_from_predict_timings(tmp_path):
    _dataset(tmp_path)
    _write_labels(tmp_path / "labels", _predictions())
    timings = pc.Timings("tool", {"tool": "1.0"}, 2, [])
    for name in ("fluo1", "fluo2", "bright", "other"):
        timings.add(name, (H, W), 0.5, 1)
    pc.write_json(tmp_path / "labels" / pc.TIMINGS_NAME, timings.payload())
    code, out = _score(tmp_path, tmp_path / "labels")
    speed = json.loads((out / "peer_score.json").read_text())["speed"]
    assert code == 0 and speed["images"] == 3
    assert speed["s_per_megapixel"] == pytest.approx(1.5 / (3 * H * W / 1e6))
    assert "s per megapixel" in (out / "peer_score.md").read_text()


# -- peer_common: what both peer scripts do without their peer ---------------------------------

def test_coco_json_to_training_labels(tmp_path):
    json_path = _dataset(tmp_path)
    samples = pc.load_coco_samples(json_path)
    assert [s.name for s in samples] == ["fluo1", "fluo2", "bright"]
    first = samples[0]
    assert first.image.shape == (H, W, 3) and first.labels.dtype == np.uint16
    for k, mask in enumerate(_ground_truth()[0][2], start=1):
        assert np.array_equal(first.labels == k, mask)
    assert pc.is_bright_background(samples[2].image) and not pc.is_bright_background(first.image)
    assert pc.invert(samples[2].image).max() == 255 - samples[2].image.min()

    # Polygons and uncompressed RLE too; an earlier mask keeps the pixels both claim.
    square = [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0]]
    rle = mask_util.encode(np.asfortranarray(_disc(8, 8, 4).astype(np.uint8)))
    uncompressed = {"size": [H, W], "counts": _uncompressed(_disc(8, 8, 4))}
    labels = pc.annotations_to_labels([{"segmentation": square}, {"segmentation": uncompressed}, {"segmentation": {"size": [H, W], "counts": rle["counts"]}, "iscrowd": 1}], H, W)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.array_equal(labels == 1, mask_util.decode(mask_util.merge(mask_util.frPyObjects(square, H, W))).astype(bool))
    assert np.array_equal(labels == 2, _disc(8, 8, 4) & (labels != 1))


def _uncompressed(mask):
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_holdout_split_inputs_and_outputs(tmp_path):
    train, held = pc.holdout_split(50, 0.1, seed=0)
    assert len(held) == 5 and sorted(train + held) == list(range(50))
    assert pc.holdout_split(50, 0.1, seed=0) == (train, held) and pc.holdout_split(50, 0.1, seed=1) != (train, held)
    assert pc.holdout_split(3, 0.1, 0)[1] != [] and pc.holdout_split(1, 0.1, 0) == ([0], [])

    _dataset(tmp_path)
    files = pc.expand_inputs([str(tmp_path / "stage" / "*" / "images" / "*.png")])
    assert [f.stem for f in files] == ["bright", "fluo1", "fluo2"]
    assert pc.expand_inputs([str(files[0]), str(files[0].parent)]) == [files[0]]
    with pytest.raises(pc.PeerError, match="no such file or folder"):
        pc.expand_inputs([str(tmp_path / "nothing")])
    args = stardist_peer.parse_args(["predict", "--coco-json", str(tmp_path / "ann" / "val.json"), "--limit", "2",
                                     "--model-dir", "m", "--output-dir", "o"])
    assert [f.name for f in pc.predict_inputs(args)] == ["fluo1.png", "fluo2.png"]

    many = np.zeros((4, 70_000), np.int64)
    many[0] = np.arange(70_000) + 1
    written = pc.write_label_outputs(tmp_path / "out", "big", many, {}, "src")
    assert tifffile.imread(written[0]).dtype == np.uint32
    small = np.array([[0, 3], [3, 5]])
    written = pc.write_label_outputs(tmp_path / "out", "small", small, {3: 0.25}, "src")
    assert tifffile.imread(written[0]).dtype == np.uint16
    assert score.read_scores(written[1], small).tolist() == [1.0, 1.0, 0.25, 1.0, 1.0]
    assert written[1].read_text().splitlines()[1:] == ["small,src,3,0.25,2", "small,src,5,1,1"]


# -- the peers' command lines ----------------------------------------------------------------

@pytest.mark.parametrize("peer", [stardist_peer, cellpose_peer], ids=["stardist", "cellpose"])
def test_peer_command_lines(peer, tmp_path, capsys):
    args = peer.parse_args(["train", "train.json", "--budget-minutes", "80", "--model-dir", "m"])
    assert (args.command, args.train_json, args.budget_minutes, args.seed, args.threads) == ("train", "train.json", 80.0, 0, 0)
    assert args.image_root is None and args.limit_images is None and args.calibration_minutes == 0
    args = peer.parse_args(["train", "t.json", "--budget-minutes", "80", "--calibration-minutes", "10", "--model-dir", "m"])
    assert pc.fitting_deadline(args).remaining() == pytest.approx(70 * 60, abs=5)
    args = peer.parse_args(["predict", "a.png", "dir/", "--model-dir", "m", "--output-dir", "o", "--threads", "1"])
    assert (args.inputs, args.coco_json, args.threads, args.verbose) == (["a.png", "dir/"], None, 1, False)
    assert peer.parse_args(["predict", "--coco-json", "v.json", "--model-dir", "m", "--output-dir", "o", "--verbose"]).verbose
    for bad in (["train", "t.json", "--model-dir", "m"],  # no budget
                ["train", "t.json", "--budget-minutes", "0", "--model-dir", "m"],
                ["train", "t.json", "--budget-minutes", "1", "--model-dir", "m", "--limit-images", "0"],
                ["train", "t.json", "--budget-minutes", "2", "--model-dir", "m", "--calibration-minutes", "2"],
                ["predict", "--model-dir", "m", "--output-dir", "o"],  # no input
                ["predict", "a.png", "--coco-json", "v.json", "--model-dir", "m", "--output-dir", "o"],
                ["evaluate"]):
        with pytest.raises(SystemExit) as exit_info:
            peer.parse_args(bad)
        assert exit_info.value.code == 2
    capsys.readouterr()

    # Errors are one line naming the file; no peer is imported before the model is found.
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))
    assert peer.main(["predict", str(image), "--model-dir", str(tmp_path / "none"), "--output-dir", str(tmp_path / "o")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(tmp_path / "none") in error and error.count("\n") == 1
    assert peer.main(["predict", str(tmp_path / "b.png"), "--model-dir", "m", "--output-dir", "o"]) == 1
    assert "b.png: no such file or folder" in capsys.readouterr().err
    assert "stardist" not in sys.modules and "cellpose" not in sys.modules and "tensorflow" not in sys.modules


def test_peer_specific_options():
    args = stardist_peer.parse_args(["train", "t.json", "--budget-minutes", "2", "--model-dir", "m"])
    assert (args.holdout, args.max_epochs, args.steps_per_epoch) == (0.1, 400, 100)
    with pytest.raises(SystemExit):
        stardist_peer.parse_args(["train", "t.json", "--budget-minutes", "2", "--model-dir", "m", "--holdout", "1"])
    args = cellpose_peer.parse_args(["train", "t.json", "--budget-minutes", "2", "--model-dir", "m"])
    assert (args.optimizer, args.learning_rate, args.invert_bright, args.nimg_per_epoch) == ("sgd", None, False, None)
    assert cellpose_peer.OPTIMISERS[args.optimizer] == (True, 0.2)
    with pytest.raises(SystemExit):
        cellpose_peer.parse_args(["train", "t.json", "--budget-minutes", "2", "--model-dir", "m", "--optimizer", "lbfgs"])


def test_peer_helpers_without_peers():
    # StarDist: patch size and object scores from its polygon probabilities.
    assert stardist_peer.patch_size([np.zeros((300, 400, 3)), np.zeros((520, 696, 3))]) == (256, 256)
    assert stardist_peer.patch_size([np.zeros((200, 360, 3))]) == (192, 256)
    with pytest.raises(pc.PeerError, match="too small"):
        stardist_peer.patch_size([np.zeros((10, 360, 3))])
    labels = np.array([[0, 1, 1], [2, 0, 3]])
    assert stardist_peer.object_scores({"prob": [0.9, 0.7, 0.55]}, labels) == {1: 0.9, 2: 0.7, 3: 0.55}
    x, y = stardist_peer.augment(np.random.rand(8, 6, 3), np.arange(48).reshape(8, 6))
    assert x.shape[2] == 3 and sorted(y.ravel()) == list(range(48))

    # Cellpose: epochs fitted to a budget, and scores from the cell-probability logits.
    assert cellpose_peer.epochs_for(600.0, 2.0, 10) == 29
    assert cellpose_peer.epochs_for(1.0, 2.0, 10) == 1
    # About 250 epochs of whole batches: 80 minutes of 18 s batches are one batch an epoch.
    assert cellpose_peer.images_per_epoch(4800.0, 18.0) == 8
    assert cellpose_peer.images_per_epoch(4800.0, 1.0) == 8 * 19
    assert cellpose_peer.images_per_epoch(10.0, 18.0) == 8
    cellprob = np.array([[0.0, 100.0], [-100.0, 0.0]])
    scores = cellpose_peer.object_scores(np.array([[1, 1], [2, 0]]), cellprob)
    assert scores[1] == pytest.approx(0.75) and scores[2] == pytest.approx(0.0)
    assert cellpose_peer.object_scores(np.zeros((2, 2), int), cellprob) == {}


def test_setup_script_refuses_unknown_peers():
    result = subprocess.run(["bash", str(PEERS / "setup.sh"), "deepcell"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage:" in result.stderr
