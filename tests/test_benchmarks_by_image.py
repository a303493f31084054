"""benchmarks/by_image.py: scores by image kind and paired intervals, from real files."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import by_image  # noqa: E402


def _run(folder: Path, dsb: list) -> Path:
    out = folder / "inference" / "val"
    out.mkdir(parents=True)
    rows = [{"image_id": i + 1, "dsb_score": s, "fg_iou": s / 2} for i, s in enumerate(dsb)]
    (out / "metrics.json").write_text(json.dumps({"per_image": rows}))
    return folder


def test_kinds_and_paired_differences(tmp_path):
    images = []
    for i, value in enumerate((10, 10, 240, 240)):  # two fluorescence, two brightfield
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 50), value, np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 40, "width": 50})
    (tmp_path / "val.json").write_text(json.dumps({"images": images}))
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
    kept = _run(tmp_path / "old", [0.2, 0.4]) / "inference" / "val" / "metrics.json"
    new = _run(tmp_path / "new", [0.3, 0.6])
    by_image.main([str(new), "--baseline", str(kept), "--val-json", str(tmp_path / "val.json"),
                   "--image-root", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    paired = json.loads((tmp_path / "out" / "by_image.json").read_text())[str(new)]["all"]["paired_dsb"]
    assert paired["mean"] == pytest.approx(0.15) and paired["better"] == 2
