"""benchmarks/by_image.py: scores by image kind and paired intervals, from real files."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import by_image  # noqa: E402


def _run(folder: Path, dsb: list, counts: list = None) -> Path:
    """A run folder whose metrics.json has per-image rows; ``counts`` (TP, FP, FN at IoU 0.5) per
    image as the evaluator now writes them, or none as in files written before."""
    out = folder / "inference" / "val"
    out.mkdir(parents=True)
    rows = [{"image_id": i + 1, "dsb_score": s, "fg_iou": s / 2} for i, s in enumerate(dsb)]
    for row, (tp, fp, fn) in zip(rows, counts or []):
        row.update({"tp@0.5": tp, "fp@0.5": fp, "fn@0.5": fn})
    (out / "metrics.json").write_text(json.dumps({"per_image": rows}))
    return folder


def _two_kinds(tmp_path: Path) -> None:
    """val.json of images 1, 2 (fluorescence small) and 3, 4 (brightfield small)."""
    images = []
    for i, value in enumerate((10, 10, 240, 240)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 50), value, np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 40, "width": 50})
    (tmp_path / "val.json").write_text(json.dumps({"images": images}))


def test_kinds_and_paired_differences(tmp_path):
    _two_kinds(tmp_path)
    base = _run(tmp_path / "base", [0.2, 0.4, 0.1, 0.3])
    new = _run(tmp_path / "new", [0.3, 0.5, 0.1, 0.2])
    by_image.main([str(new), "--baseline", str(base), "--val-json", str(tmp_path / "val.json"),
                   "--image-root", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "by_image.json").read_text())
    assert result[str(new)]["fluorescence small"]["dsb_score"] == pytest.approx(0.4)
    assert result[str(base)]["brightfield small"]["fg_iou"] == pytest.approx(0.1)
    paired = result[str(new)]["all"]["paired_dsb"]
    assert paired["mean"] == pytest.approx(0.025) and (paired["better"], paired["worse"]) == (2, 1)
    assert paired["ci95"][0] <= 0.025 <= paired["ci95"][1]
    assert result[str(new)]["fluorescence small"]["paired_dsb"]["ci95"] == pytest.approx([0.1, 0.1])


def test_f1_by_kind_and_paired_when_every_run_has_counts(tmp_path):
    _two_kinds(tmp_path)
    # Per-image F1 = 2TP/(2TP+FP+FN): base 1/2, 1/2, 1 (nothing there, nothing found), 0.
    base = _run(tmp_path / "base", [0.2] * 4, [(1, 1, 1), (1, 1, 1), (0, 0, 0), (0, 2, 2)])
    # new 1, 1, 0, 1/2: differences +1/2, +1/2, -1, +1/2.
    new = _run(tmp_path / "new", [0.2] * 4, [(2, 0, 0), (2, 0, 0), (0, 1, 0), (1, 1, 1)])
    by_image.main([str(new), "--baseline", str(base), "--val-json", str(tmp_path / "val.json"),
                   "--image-root", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "by_image.json").read_text())
    # Pooled per kind, as the evaluator pools its f1@0.5: "all" of base is TP 2, FP 4, FN 4.
    pooled = {run: {g: result[str(run)][g]["f1@0.5"] for g in result[str(run)]} for run in (base, new)}
    assert pooled[base] == {"all": 4 / 12, "fluorescence small": 4 / 8, "brightfield small": 0.0}
    assert pooled[new] == {"all": 10 / 13, "fluorescence small": 1.0, "brightfield small": 2 / 5}
    paired = result[str(new)]["all"]["paired_f1"]
    assert paired["mean"] == pytest.approx(1 / 8) and (paired["better"], paired["worse"]) == (3, 1)
    assert paired["ci95"][0] <= 1 / 8 <= paired["ci95"][1]
    assert result[str(new)]["fluorescence small"]["paired_f1"]["ci95"] == pytest.approx([0.5, 0.5])
    assert result[str(new)]["brightfield small"]["paired_f1"]["mean"] == pytest.approx(-0.25)
    table = (tmp_path / "out" / "by_image.md").read_text()
    assert f"| {new} | 0.200 / 0.100 / 0.769 | 0.200 / 0.100 / 0.400 | 0.200 / 0.100 / 1.000 |" in table
    assert "Paired per-image F1@0.5 difference" in table and "needs per-image counts" not in table


def test_f1_pairs_the_counted_runs_when_an_older_one_lacks_counts(tmp_path):
    _two_kinds(tmp_path)
    base = _run(tmp_path / "base", [0.2] * 4, [(1, 1, 1), (1, 1, 1), (0, 0, 0), (0, 2, 2)])
    new = _run(tmp_path / "new", [0.2] * 4, [(2, 0, 0), (2, 0, 0), (0, 1, 0), (1, 1, 1)])
    old = _run(tmp_path / "old", [0.3] * 4)
    by_image.main([str(new), str(old), "--baseline", str(base), "--val-json", str(tmp_path / "val.json"),
                   "--image-root", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "by_image.json").read_text())
    assert result[str(new)]["all"]["paired_f1"]["mean"] == pytest.approx(1 / 8)
    assert "paired_f1" not in result[str(old)]["all"] and "f1@0.5" not in result[str(old)]["all"]
    assert result[str(old)]["all"]["paired_dsb"]["mean"] == pytest.approx(0.1)
    table = (tmp_path / "out" / "by_image.md").read_text()
    assert "Paired per-image F1@0.5 difference" in table and f"without them: {old}" in table


def test_a_run_on_other_images_is_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "val.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}]}))
    run = _run(tmp_path / "run", [0.1, 0.2])
    with pytest.raises(SystemExit, match="not those of"):
        by_image.main([str(run), "--val-json", str(tmp_path / "val.json"), "--image-root", str(tmp_path),
                       "--output-dir", str(tmp_path / "out")])


def test_a_kept_metrics_file_stands_for_its_run(tmp_path):
    """results/per_image/ keeps only the evaluator's metrics.json of each Table 2 run, so that runs
    of different sessions (whose folders are gone) can still be paired image by image."""
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((8, 8), np.uint8))
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
    (tmp_path / "val.json").write_text(json.dumps({"images": images}))
    kept = _run(tmp_path / "old", [0.2, 0.4]) / "inference" / "val" / "metrics.json"  # no counts yet
    new = _run(tmp_path / "new", [0.3, 0.6], [(1, 0, 0), (1, 0, 0)])
    by_image.main([str(new), "--baseline", str(kept), "--val-json", str(tmp_path / "val.json"),
                   "--image-root", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "by_image.json").read_text())[str(new)]["all"]
    assert result["paired_dsb"]["mean"] == pytest.approx(0.15) and result["paired_dsb"]["better"] == 2
    # F1 for the run that has counts; no pairing against a baseline without them.
    assert result["f1@0.5"] == 1.0 and "paired_f1" not in result
    table = (tmp_path / "out" / "by_image.md").read_text()
    assert table.startswith("DSB score / foreground IoU (per-image means) / F1@0.5 (pooled) where counted by image kind")
    assert "Paired per-image F1@0.5" not in table
    assert table.rstrip().splitlines()[-1].startswith("F1@0.5 needs per-image counts")
    assert table.rstrip().endswith(f"without them: {kept}")
