"""benchmarks/errors_by_kind.py: every error class on hand-made cases whose answers are known.

The inputs are what the script reads in use: dsb2018-style PNG images, the converter's val JSON
(compressed RLE, info.image_root) and one folder of <id>_labels.tif per tool.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import errors_by_kind  # noqa: E402

from conftest import write_val_dataset  # noqa: E402

H, W = 48, 64


def _disc(cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _box(top, left, bottom, right):
    """Rows top..bottom-1, columns left..right-1."""
    mask = np.zeros((H, W), bool)
    mask[top:bottom, left:right] = True
    return mask


def _cases():
    """Per image (name, grey background, true nuclei, predicted objects), each case commented."""
    a, b, c, d = _disc(10, 10, 5), _disc(38, 10, 5), _disc(20, 35, 4), _disc(20, 47, 4)
    fluo1 = [a,                      # matched, IoU 1
             b,                      # missed, not found: nothing predicted there
             c, d]                   # missed, merged: one box covers both
    fluo1_pred = [a.copy(),
                  _box(15, 30, 26, 53),   # extra, cell body or merge: covers c, 253 px > 2 x 49
                  _disc(40, 55, 3)]       # extra, background: on no nucleus
    h, i = _disc(24, 20, 9), _disc(24, 32, 2)
    fluo2 = [h,                      # matched by h + i, IoU 253 / 266
             i]                      # missed, merged: its prediction is matched to h
    fluo2_pred = [h | i]
    e, f, g = _disc(12, 12, 3), _disc(30, 40, 8), _box(6, 45, 16, 55)
    j, k = _disc(40, 12, 4), _disc(40, 22, 4)
    right = np.mgrid[:H, :W][1] >= 45
    corner = _box(6, 53, 12, 55)
    bright1 = [e,                    # missed, outlined: a cell-body-sized object covers it alone
               f,                    # matched by f's left part, IoU 165 / 197
               g,                    # matched, IoU 88 / 100
               j, k]                 # missed, not found: the straddling box holds 21 / 49 of each
    bright1_pred = [_disc(12, 12, 9),     # extra, cell body or merge: 253 px around e's 29
                    f & ~right,
                    f & right,            # extra, fragment: 32 px, all inside f
                    g & ~corner,
                    _box(38, 12, 43, 23)]  # extra, other: 42 of its 55 px on j and k, neither half of it
    return [("fluo1", 12, fluo1, fluo1_pred), ("fluo2", 20, fluo2, fluo2_pred), ("bright1", 230, bright1, bright1_pred)]


def _dataset(root: Path) -> Path:
    return write_val_dataset(root, [(name, background, truth) for name, background, truth, _ in _cases()])


def _write_labels(folder: Path, perfect: bool = False) -> Path:
    folder.mkdir(parents=True)
    for name, _, truth, pred in _cases():
        labels = np.zeros((H, W), np.uint16)
        for label, mask in enumerate(truth if perfect else pred, start=1):
            assert not labels[mask].any(), f"{name}: object {label} overlaps another"
            labels[mask] = label
        tifffile.imwrite(folder / f"{name}_labels.tif", labels, compression="zlib")
    return folder


def _run(tmp_path, *argv):
    out = tmp_path / "out"
    code = errors_by_kind.main([*map(str, argv), "--val-json", str(tmp_path / "ann" / "val.json"),
                                "--output-dir", str(out)])
    return code, out


def test_hand_made_errors_are_counted_exactly(tmp_path, capsys):
    _dataset(tmp_path)
    tool, perfect = _write_labels(tmp_path / "tool"), _write_labels(tmp_path / "truth", perfect=True)
    code, out = _run(tmp_path, tool, perfect, "--name", "tool", "--name", "perfect")
    assert code == 0
    payload = json.loads((out / "errors_by_kind.json").read_text())
    groups = payload["runs"]["tool"]["groups"]
    assert list(groups) == ["all", "brightfield", "fluorescence"]

    counts = {key: [groups[g][key] for g in ("fluorescence", "brightfield", "all")] for key in errors_by_kind.COUNTS}
    assert [groups[g]["images"] for g in ("fluorescence", "brightfield", "all")] == [2, 1, 3]
    assert counts == {
        "true": [6, 5, 11], "predicted": [4, 5, 9], "matched": [2, 2, 4],
        "missed": [4, 3, 7], "merged": [3, 0, 3], "outlined": [0, 1, 1], "not_found": [1, 2, 3],
        "extra": [2, 3, 5], "cell_body_or_merge": [1, 1, 2], "fragment": [0, 1, 1], "background": [1, 0, 1],
        "other": [0, 1, 1],
    }
    # Matched IoUs: a 1, h 253/266, f 165/197, g 88/100; area ratios 1, 266/253, 165/197, 0.88.
    assert groups["fluorescence"]["iou_at_least"] == {"0.75": 1.0, "0.85": 1.0, "0.9": 1.0}
    assert groups["brightfield"]["iou_at_least"] == {"0.75": 1.0, "0.85": 0.5, "0.9": 0.0}
    assert groups["all"]["iou_at_least"] == {"0.75": 1.0, "0.85": 0.75, "0.9": 0.5}
    assert groups["all"]["median_iou"] == pytest.approx((0.88 + 253 / 266) / 2)
    assert groups["brightfield"]["median_iou"] == pytest.approx((0.88 + 165 / 197) / 2)
    assert groups["all"]["median_area_ratio"] == pytest.approx((0.88 + 1.0) / 2)
    assert groups["fluorescence"]["median_area_ratio"] == pytest.approx((1 + 266 / 253) / 2)
    rows = {row["image"]: row for row in payload["runs"]["tool"]["per_image"]}
    assert rows["fluo2"]["kind"] == "fluorescence small" and rows["fluo2"]["merged"] == 1
    # By true area, [matched, true]: discs of radius 2, 3 and 4 hold 13, 29 and 49 px (c, d, i, e, j, k:
    # none matched); a, b (81 px) and g (100 px): a and g matched; h (253 px) and f (197 px): both.
    assert groups["fluorescence"]["matched_by_size"] == {"<50": [0, 3], "50-150": [1, 2], "150-400": [1, 1], "400+": [0, 0]}
    assert groups["brightfield"]["matched_by_size"] == {"<50": [0, 3], "50-150": [1, 1], "150-400": [1, 1], "400+": [0, 0]}
    assert groups["all"]["matched_by_size"] == {"<50": [0, 6], "50-150": [2, 3], "150-400": [2, 2], "400+": [0, 0]}

    # The evaluator's matching: the matched IoUs are what its metrics see for these masks.
    from sharp_fpn.evaluation.metrics import encode_masks, evaluate_image

    for name, _, truth, pred in _cases():
        result = evaluate_image(encode_masks(truth), encode_masks(pred), [1.0] * len(pred))
        assert sorted(rows[name]["ious"]) == pytest.approx(sorted(result.matched_ious))

    ideal = payload["runs"]["perfect"]["groups"]["all"]
    assert (ideal["matched"], ideal["missed"], ideal["extra"], ideal["median_iou"]) == (11, 0, 0, 1.0)
    markdown = (out / "errors_by_kind.md").read_text()
    assert "#### brightfield" in markdown and "| tool | 1 | 5 | 5 | 2 | 3: 0 / 1 / 2 | 3: 1 / 1 / 0 / 1 |" in markdown
    assert "| 0.00 of 6 / 0.67 of 3 / 1.00 of 2 / n/a of 0 |" in markdown
    assert f"wrote {out / 'errors_by_kind.json'}" in capsys.readouterr().out


def test_missing_or_bad_label_image_is_one_line_and_exit_1(tmp_path, capsys):
    _dataset(tmp_path)
    tool = _write_labels(tmp_path / "tool")
    (tool / "bright1_labels.tif").unlink()
    code, _ = _run(tmp_path, tool)
    error = capsys.readouterr().err
    assert code == 1 and error.startswith("error: ") and error.count("\n") == 1
    assert "bright1_labels.tif" in error and str(tool) in error

    code, out = _run(tmp_path, tool, "--only-predicted")
    assert code == 0 and json.loads((out / "errors_by_kind.json").read_text())["runs"]["tool"]["images"] == 2

    tifffile.imwrite(tool / "fluo1_labels.tif", np.zeros((10, 10), np.uint16))
    code, _ = _run(tmp_path, tool, "--only-predicted")
    error = capsys.readouterr().err
    assert code == 1 and "fluo1_labels.tif: 10x10 px, its image is 64x48" in error and error.count("\n") == 1


def test_names_must_match_the_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        errors_by_kind.parse_args(["a", "b", "--val-json", "v.json", "--name", "x"])
    assert exit_info.value.code == 2 and "1 --name for 2 folders" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        errors_by_kind.parse_args(["x/tool", "y/tool", "--val-json", "v.json"])
    assert errors_by_kind.parse_args(["x/tool", "--val-json", "v.json"]).names == ["tool"]


def test_same_images_and_matches_as_the_label_image_scorer(tmp_path):
    """benchmarks/peers/score.py reads the same folders through the same code: the same images
    per kind, and its evaluator's pooled precision and recall at IoU 0.5 are matched / predicted
    and matched / true."""
    sys.path.insert(0, str(BENCHMARKS / "peers"))
    import score

    _dataset(tmp_path)
    tool = _write_labels(tmp_path / "tool")
    assert score.main([str(tool), "--val-json", str(tmp_path / "ann" / "val.json"), "--name", "tool",
                       "--output-dir", str(tmp_path / "score")]) == 0
    scored = json.loads((tmp_path / "score" / "peer_score.json").read_text())["groups"]
    code, out = _run(tmp_path, tool)
    counted = json.loads((out / "errors_by_kind.json").read_text())["runs"]["tool"]["groups"]
    assert code == 0 and list(scored) == list(counted)
    for group, result in counted.items():
        assert scored[group]["images"] == result["images"]
        assert scored[group]["nuclei"]["precision@0.5"] == pytest.approx(result["matched"] / result["predicted"])
        assert scored[group]["nuclei"]["recall@0.5"] == pytest.approx(result["matched"] / result["true"])


def test_overlaps_of_more_than_255_objects():
    """Real images hold hundreds of nuclei; pycocotools' area() of a list of them overflows."""
    from sharp_fpn.evaluation.metrics import encode_masks

    masks = []
    for k in range(300):
        mask = np.zeros((60, 100), bool)
        row, col = divmod(k, 20)
        mask[row * 4:row * 4 + 2, col * 5:col * 5 + 3] = True
        masks.append(mask)
    rles = encode_masks(masks)
    area_a, area_b, ious, inter = errors_by_kind.overlaps(rles, rles[:2])
    assert area_a.tolist() == [6.0] * 300 and area_b.tolist() == [6.0, 6.0]
    assert ious.shape == (300, 2) and np.array_equal(np.diag(inter[:2]), [6.0, 6.0]) and inter[2:].sum() == 0
