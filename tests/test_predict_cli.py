"""tools/predict.py end to end, in-process: outputs, bad inputs, setup errors, exit codes."""
import json
import shutil

import numpy as np
import pytest
import tifffile
from test_predict import one_torch_thread, synthetic_images, tiny_checkpoint  # noqa: F401

from sharp_fpn.modeling.tta import FlipTTA
from sharp_fpn.predict import NucleiPredictor

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


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


def run(predict_cli, capsys, *argv):
    code = predict_cli.main(["--no-progress"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_batch_goes_on_past_bad_files_and_writes_every_format(predict_cli, capsys, inputs, tmp_path):
    out_dir = tmp_path / "out"
    weights = tiny_checkpoint() / "model_final.pth"
    code, out, err = run(predict_cli, capsys, inputs, tmp_path / "missing.png", str(tmp_path / "none*.tif"),
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


def test_no_detections_give_empty_outputs(predict_cli, capsys, tmp_path):
    image = synthetic_images()[3]
    code, _, err = run(predict_cli, capsys, image, "--weights", tiny_checkpoint() / "model_final.pth",
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
def test_setup_errors_are_one_line_with_exit_code_2(predict_cli, capsys, tmp_path, problem):
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
    code, out, err = run(predict_cli, capsys, *argv)
    assert code == 2 and out == "" and not (tmp_path / "out").exists()
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert ("model_final.pth" in err or "lone.pth" in err)


def test_opts_override_the_config(predict_cli, capsys, tmp_path):
    image = synthetic_images()[0]
    code, _, _ = run(predict_cli, capsys, image, "--weights", tiny_checkpoint() / "model_final.pth", "--output-dir", tmp_path,
                     "--score-threshold", "0", "--device", "cpu", "--opts", "TEST.DETECTIONS_PER_IMAGE", "2")
    assert code == 0 and tifffile.imread(tmp_path / f"{image.stem}_labels.tif").max() <= 2


def test_tta_flag_predicts_through_test_time_flips(predict_cli, capsys, tmp_path):
    image = synthetic_images()[1]
    code, _, _ = run(predict_cli, capsys, image, "--weights", tiny_checkpoint() / "model_final.pth", "--output-dir", tmp_path,
                     "--score-threshold", "0", "--device", "cpu", "--tta")
    folder = tiny_checkpoint()
    flipped = NucleiPredictor(folder / "config.yaml", folder / "model_final.pth", device="cpu", score_threshold=0.0, tta=True)
    assert code == 0 and isinstance(flipped.inference_model, FlipTTA)
    expected = flipped.predict(image).labels
    assert expected.max() > 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{image.stem}_labels.tif"), expected)


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


# -- the shipped model, by name or by default --------------------------------------------------

@pytest.fixture(scope="module")
def tiny_shipped(tmp_path_factory):
    """The tiny test model exported in the shipped form."""
    from sharp_fpn.predict.pretrained import ShippedModel, export_model

    folder = tmp_path_factory.mktemp("shipped")
    exported = export_model(tiny_checkpoint() / "model_final.pth", folder, "tiny")
    return ShippedModel("tiny", "tiny.yaml", "tiny.pth", exported.sha256, folder=folder)


def one_error_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("by_name", [True, False], ids=["--model", "default"])
def test_shipped_model_predicts_without_weights(predict_cli, capsys, tmp_path, monkeypatch, tiny_shipped, by_name):
    from sharp_fpn.predict.pretrained import DEFAULT_MODEL, SHIPPED_MODELS

    name = "tiny" if by_name else DEFAULT_MODEL
    monkeypatch.setitem(SHIPPED_MODELS, name, tiny_shipped)
    image = synthetic_images()[0]
    code, out, err = run(predict_cli, capsys, image, *(["--model", "tiny"] if by_name else []), "--output-dir", tmp_path,
                         "--score-threshold", "0", "--device", "cpu")
    assert code == 0 and err == "" and "1 image(s)" in out
    assert tifffile.imread(tmp_path / f"{image.stem}_labels.tif").max() > 0


def test_missing_shipped_weights_is_one_line(predict_cli, capsys, tmp_path, monkeypatch, tiny_shipped):
    from dataclasses import replace

    from sharp_fpn.predict.pretrained import DEFAULT_MODEL, SHIPPED_MODELS

    monkeypatch.setitem(SHIPPED_MODELS, DEFAULT_MODEL, replace(tiny_shipped, folder=tmp_path / "gone"))
    code, out, err = run(predict_cli, capsys, synthetic_images()[0], "--output-dir", tmp_path / "out", "--device", "cpu")
    assert code == 2 and out == "" and not (tmp_path / "out").exists()
    assert "tiny.pth is missing" in one_error_line(err) and "--weights" in err


@pytest.mark.parametrize("problem", ["unknown model", "config without weights", "weights nowhere"])
def test_model_choice_errors_are_one_line(predict_cli, capsys, tmp_path, problem):
    argv = {"unknown model": ["--model", "nope"],
            "config without weights": ["--config", tiny_checkpoint() / "config.yaml"],
            "weights nowhere": ["--weights", tmp_path / "nowhere.pth"]}[problem]
    code, out, err = run(predict_cli, capsys, synthetic_images()[0], "--output-dir", tmp_path / "out", "--device", "cpu", *argv)
    assert code == 2 and out == "" and not (tmp_path / "out").exists()
    expected = {"unknown model": "no shipped model named 'nope'; known: nuclei",
                "config without weights": "--config goes with --weights",
                "weights nowhere": f"weights {tmp_path / 'nowhere.pth'}: no such file"}[problem]
    assert expected in one_error_line(err)


def test_bad_scale_names_the_option(predict_cli, capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:
        run(predict_cli, capsys, synthetic_images()[0], "--weights", tiny_checkpoint() / "model_final.pth", "--scale", "foo")
    _, err = capsys.readouterr()
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("error: argument --scale: 'foo' is neither 'auto' nor a positive number")


def test_help_is_self_contained(predict_cli):
    text = predict_cli.get_parser().format_help()
    assert "(see --help)" not in text and "--model" in text and "--coco-json" in text


def test_missing_input_makes_no_output_folder(predict_cli, capsys, tmp_path):
    code, out, err = run(predict_cli, capsys, tmp_path / "nowhere.png", "--weights", tiny_checkpoint() / "model_final.pth",
                         "--output-dir", tmp_path / "out")
    assert code == 1 and not (tmp_path / "out").exists()
    assert f"{tmp_path / 'nowhere.png'}: no such file or folder" in one_error_line(err)


def test_same_named_inputs_are_mapped_and_keep_their_source(predict_cli, capsys, tmp_path):
    import csv

    sources = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        sources.append(tmp_path / folder / "x.png")
        shutil.copy(synthetic_images()[0], sources[-1])
    code, out, _ = run(predict_cli, capsys, sources[0], sources[1], "--weights", tiny_checkpoint() / "model_final.pth",
                       "--output-dir", tmp_path / "out", "--objects", "--score-threshold", "0", "--device", "cpu")
    assert code == 0 and f"{sources[1]} -> x-2_* (another input is also named x)" in out
    for name, source in (("x", sources[0]), ("x-2", sources[1])):
        with open(tmp_path / "out" / f"{name}_objects.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and {row["source"] for row in rows} == {str(source)} and {row["image"] for row in rows} == {name}


# -- coco_results.json against the converter's JSON ------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A synthetic Dsb2018 folder and the converter's train/val JSON of it."""
    from sharp_fpn.data import convert_dsb2018
    from sharp_fpn.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("converted")
    make_synthetic_dataset(root / "stage", num_images=6, size=(96, 128), seed=3)
    convert_dsb2018(root / "stage", root / "annotations", val_fraction=0.5, seed=0)
    return root


def test_coco_results_score_against_the_converters_json(predict_cli, capsys, tmp_path, converted):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    val_json = converted / "annotations" / "val.json"
    truth = COCO(str(val_json))
    images = list(reversed(truth.dataset["images"]))  # an order unlike the JSON's
    files = [converted / "stage" / image["file_name"] for image in images]
    code, _, err = run(predict_cli, capsys, *files, "--weights", tiny_checkpoint() / "model_final.pth", "--output-dir", tmp_path,
                       "--coco-json", val_json, "--score-threshold", "0", "--device", "cpu")
    capsys.readouterr()
    assert code == 0 and err == ""
    results = truth.loadRes(str(tmp_path / "coco_results.json"))  # raises if an image id is unknown
    by_id = {image["id"]: image["file_name"] for image in images}
    for result in results.dataset["annotations"]:
        assert by_id[result["image_id"]].endswith(result["file_name"])
    assert {r["image_id"] for r in results.dataset["annotations"]} == set(by_id)
    evaluation = COCOeval(truth, results, "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    assert len(evaluation.evalImgs) > 0


def test_an_image_missing_from_the_coco_json_is_one_line(predict_cli, capsys, tmp_path, converted):
    val_json = converted / "annotations" / "val.json"
    listed = val_json.read_text()
    train_image = next(p for p in sorted(converted.glob("stage/*/images/*")) if p.name not in listed)
    code, out, err = run(predict_cli, capsys, train_image, "--weights", tiny_checkpoint() / "model_final.pth",
                         "--output-dir", tmp_path / "out", "--coco-json", val_json, "--device", "cpu")
    assert code == 2 and out == "" and not (tmp_path / "out").exists()
    assert f"{train_image}: no image of this file name in {val_json}" in one_error_line(err)
