"""tools/predict.py end to end, in-process: outputs, bad inputs, setup errors, exit codes."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_predict import one_torch_thread, synthetic_images, tiny_checkpoint  # noqa: F401

TOOL = Path(__file__).resolve().parent.parent / "tools" / "predict.py"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("predict_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def inputs(tmp_path):
    """A folder of the four synthetic file kinds, a corrupt PNG and a 5-channel TIFF."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in synthetic_images():
        shutil.copy(path, folder / path.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    tifffile.imwrite(folder / "stack.tif", np.zeros((5, 8, 8), np.uint8), photometric="minisblack", planarconfig="separate")
    return folder


def run(cli, capsys, *argv):
    code = cli.main(["--no-progress"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_batch_goes_on_past_bad_files_and_writes_every_format(cli, capsys, inputs, tmp_path):
    out_dir = tmp_path / "out"
    weights = tiny_checkpoint() / "model_final.pth"
    code, out, err = run(cli, capsys, inputs, tmp_path / "missing.png", str(tmp_path / "none*.tif"),
                         "--weights", weights, "--output-dir", out_dir, "--all", "--score-threshold", "0", "--device", "cpu")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4 and "Traceback" not in err
    for name in ("broken.png", "stack.tif", "missing.png", "none*.tif"):
        assert sum(name in line for line in errors) == 1, name
    names = [p.stem for p in synthetic_images()]
    for name in names:
        for suffix in ("_labels.tif", "_overlay.png", "_objects.csv", ".geojson", "_rois.zip"):
            assert (out_dir / f"{name}{suffix}").is_file()
    assert not list(out_dir.glob("broken*")) and not list(out_dir.glob(".*"))  # nothing half-written
    coco = json.loads((out_dir / "coco_results.json").read_text())
    submission = (out_dir / "submission.csv").read_text().splitlines()
    total = sum(int(tifffile.imread(out_dir / f"{n}_labels.tif").max()) for n in names)
    assert len(coco) == len(submission) - 1 == total > 0
    assert f"4 image(s), {total} nuclei" in out and str(out_dir / "coco_results.json") in out


def test_no_detections_give_empty_outputs(cli, capsys, tmp_path):
    image = synthetic_images()[3]
    code, _, err = run(cli, capsys, image, "--weights", tiny_checkpoint() / "model_final.pth",
                       "--config", tiny_checkpoint() / "config.yaml", "--output-dir", tmp_path,
                       "--score-threshold", "1.0", "--objects", "--geojson", "--kaggle", "--device", "cpu")
    assert code == 0 and err == ""
    labels = tifffile.imread(tmp_path / f"{image.stem}_labels.tif")
    assert labels.shape == (96, 128) and labels.dtype == np.uint16 and not labels.any()
    assert (tmp_path / f"{image.stem}_objects.csv").read_text().count("\n") == 1
    assert json.loads((tmp_path / f"{image.stem}.geojson").read_text())["features"] == []
    assert (tmp_path / "submission.csv").read_text().splitlines() == ["ImageId,EncodedPixels", f"{image.stem},"]
    assert not (tmp_path / f"{image.stem}_rois.zip").exists()  # only what was asked for


@pytest.mark.parametrize("problem", ["missing weights", "other architecture", "no config"])
def test_setup_errors_are_one_line_with_exit_code_2(cli, capsys, tmp_path, problem):
    weights = tiny_checkpoint() / "model_final.pth"
    argv = [synthetic_images()[0], "--output-dir", tmp_path / "out", "--device", "cpu"]
    if problem == "missing weights":
        argv += ["--weights", tmp_path / "model_final.pth", "--config", tiny_checkpoint() / "config.yaml"]
    elif problem == "other architecture":
        argv += ["--weights", weights, "--config", "mask_rcnn_sharp_VGG16"]
    else:
        lone = tmp_path / "lone.pth"
        shutil.copy(weights, lone)
        argv += ["--weights", lone]
    code, out, err = run(cli, capsys, *argv)
    assert code == 2 and out == "" and not (tmp_path / "out").exists()
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert ("model_final.pth" in err or "lone.pth" in err)


def test_opts_override_the_config(cli, capsys, tmp_path):
    image = synthetic_images()[0]
    code, _, _ = run(cli, capsys, image, "--weights", tiny_checkpoint() / "model_final.pth", "--output-dir", tmp_path,
                     "--score-threshold", "0", "--device", "cpu", "--opts", "TEST.DETECTIONS_PER_IMAGE", "2")
    assert code == 0 and tifffile.imread(tmp_path / f"{image.stem}_labels.tif").max() <= 2


def test_inputs_from_files_folders_and_globs(tmp_path):
    from sharp_fpn.predict import expand_inputs

    for sample in ("a", "b"):
        (tmp_path / sample / "images").mkdir(parents=True)
        (tmp_path / sample / "images" / f"{sample}.png").write_bytes(b"")
        (tmp_path / sample / "images" / f"{sample}.tif").write_bytes(b"")
        (tmp_path / sample / "images" / "notes.txt").write_bytes(b"")
    files, problems = expand_inputs([str(tmp_path / "*" / "images"), str(tmp_path / "a" / "images" / "a.png"),
                                     str(tmp_path / "*.jpg"), str(tmp_path / "missing")])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/images/a.png", "a/images/a.tif", "b/images/b.png", "b/images/b.tif"]  # no repeats
    assert problems == [f"{tmp_path / '*.jpg'}: no image file matches this pattern",
                        f"{tmp_path / 'missing'}: no such file or folder"]
