"""benchmarks/predict_speed.py at a tiny size: the tiny model on two small synthetic images."""
import json
import sys
from pathlib import Path

from test_predict import one_torch_thread, synthetic_images, tiny_checkpoint  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import predict_speed  # noqa: E402


def test_predict_speed_writes_seconds_per_megapixel_and_peak_memory(tmp_path, capsys):
    images = [str(p) for p in synthetic_images()[:2]]
    code = predict_speed.main(["--weights", str(tiny_checkpoint() / "model_final.pth"), "--images", *images,
                               "--repeats", "2", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "s per megapixel" in out
    payload = json.loads((tmp_path / "predict_speed.json").read_text())
    assert [row["image"] for row in payload["rows"]] == [Path(p).name for p in images]
    for row in payload["rows"]:
        assert (row["height"], row["width"]) == (96, 128) and len(row["times_s"]) == 2
        assert row["s_per_megapixel"] == row["median_s"] / row["megapixels"] > 0
        assert row["peak_rss_mib"] >= payload["rss_after_model_load_mib"] > 0
    assert (tmp_path / "predict_speed.md").read_text().startswith("### Prediction speed and memory")


def test_predict_speed_without_images_is_one_line(tmp_path, capsys):
    code = predict_speed.main(["--images", str(tmp_path / "none"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "out").exists() and "no such file or folder" in err
