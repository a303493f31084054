"""What tools/train_net.py checks and registers before a run starts: each common mistake is one
line with exit status 2 (a traceback only with --verbose), and each JSON finds its images
under its own root, the one given or the one the converter recorded; and how many torch threads
a CPU run takes."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from sharp_fpn.data import convert_dsb2018, make_synthetic_dataset
from sharp_fpn.engine import JSON_TEST, JSON_TRAIN, SetupError, register_json_datasets, set_cpu_threads
from sharp_fpn.config import get_sharp_cfg

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "train_net.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_net_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load_tool()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A converted stage, and copies of its JSONs as older converters wrote them (no recorded
    image root), with the train images only in train_images/ and the val images only in
    val_images/."""
    root = tmp_path_factory.mktemp("setup")
    make_synthetic_dataset(root / "stage", num_images=4, size=(48, 48), seed=1)
    convert_dsb2018(root / "stage", root / "ann", val_fraction=0.5, seed=0, workers=1)
    (root / "old").mkdir()
    for part, folder in (("train", "train_images"), ("val", "val_images")):
        dataset = json.loads((root / "ann" / f"{part}.json").read_text())
        del dataset["info"]["image_root"]
        (root / "old" / f"{part}.json").write_text(json.dumps(dataset))
        for image in dataset["images"]:
            sample = image["file_name"].split("/")[0]
            shutil.copytree(root / "stage" / sample, root / folder / sample)
    return root


def one_line_error(capsys, *argv):
    """Run the tool's cli in this process; return its exit status and its stderr lines."""
    with pytest.raises(SystemExit) as exited:
        train_net.cli([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and not any("Traceback" in line for line in lines), lines
    return exited.value.code, lines[0]


def test_misspelt_key(capsys):
    status, line = one_line_error(capsys, "--config", "demo_sharp_R18_cpu", "SOLVER.MAX_ITR", "20", "MODEL.DEVICE", "cpu")
    assert status == 2
    assert line == "error: config demo_sharp_R18_cpu: no config key SOLVER.MAX_ITR; did you mean SOLVER.MAX_ITER?"


def test_data_not_converted_yet_names_the_converter_once(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the registered dsb2018_* paths are relative: nothing here
    json_file = MetadataCatalog.get("dsb2018_train").json_file
    status, line = one_line_error(capsys, "--config", "mask_rcnn_sharp_R101.yaml", "MODEL.DEVICE", "cpu")
    assert status == 2
    assert line.startswith(f"error: dataset dsb2018_train: {json_file} not found; convert the data first: "
                           f"python datasets/prepare_dsb2018.py {MetadataCatalog.get('dsb2018_train').image_root} ")
    assert line.count("train.json") == 1 and "val.json" not in line


def test_json_without_a_usable_image_root_names_the_flag(capsys, data):
    status, line = one_line_error(capsys, "--config", "demo_sharp_R18_cpu", "--train-json", data / "old" / "train.json",
                                  "--test-json", data / "ann" / "val.json", "MODEL.DEVICE", "cpu")
    first = json.loads((data / "old" / "train.json").read_text())["images"][0]["file_name"]
    assert status == 2
    assert line == (f"error: {data / 'old' / 'train.json'}: its image {first} is not in {data / 'old'}; give the "
                    "folder its file_name are relative to with --image-root (or --train-image-root)")


def test_eval_only_with_missing_weights(capsys, data, tmp_path):
    weights = tmp_path / "model_final.pth"
    status, line = one_line_error(capsys, "--config", "demo_sharp_R18_cpu", "--test-json", data / "ann" / "val.json",
                                  "--eval-only", "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu")
    assert status == 2
    assert line == f"error: MODEL.WEIGHTS {weights}: no such file (this config's runs leave demo_output/train/model_final.pth)"
    status, line = one_line_error(capsys, "--config", "demo_sharp_R18_cpu", "--test-json", data / "ann" / "val.json",
                                  "--eval-only", "MODEL.DEVICE", "cpu")
    assert status == 2
    assert line == "error: --eval-only needs the weights to evaluate: add MODEL.WEIGHTS demo_output/train/model_final.pth"


def test_flags_after_the_overrides(capsys, data):
    status, line = one_line_error(capsys, "--config", "demo_sharp_R18_cpu", "MODEL.DEVICE", "cpu",
                                  "--test-json", data / "ann" / "val.json")
    assert status == 2 and line == "error: --test-json comes after the KEY VALUE overrides; give the flags first"


def test_verbose_shows_the_traceback():
    with pytest.raises(SetupError, match="no config key SOLVER.MAX_ITR"):
        train_net.cli(["--config", "demo_sharp_R18_cpu", "--verbose", "SOLVER.MAX_ITR", "20", "MODEL.DEVICE", "cpu"])


def test_as_a_program():
    run = subprocess.run([sys.executable, str(TOOL), "--config", "demo_sharp_R18_cpu", "SOLVER.MAX_ITR", "20"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: config demo_sharp_R18_cpu: no config key SOLVER.MAX_ITR")
    assert "Traceback" not in run.stderr and not run.stdout


def test_recorded_image_root_is_the_default(data):
    args = train_net.parser().parse_args(["--config", "demo_sharp_R18_cpu", "--train-json", str(data / "ann" / "train.json"),
                                          "--test-json", str(data / "ann" / "val.json"), "MODEL.DEVICE", "cpu"])
    cfg = train_net.prepare(args)
    assert cfg.DATASETS.TRAIN == (JSON_TRAIN,) and cfg.DATASETS.TEST == (JSON_TEST,)
    for name in (JSON_TRAIN, JSON_TEST):
        assert all(Path(d["file_name"]).is_file() for d in DatasetCatalog.get(name))
        assert MetadataCatalog.get(name).image_root == str(data / "stage")


def test_separate_image_roots(data):
    jsons = ["--train-json", str(data / "old" / "train.json"), "--test-json", str(data / "old" / "val.json")]
    args = train_net.parser().parse_args(["--config", "demo_sharp_R18_cpu", *jsons, "--train-image-root",
                                          str(data / "train_images"), "--test-image-root", str(data / "val_images"),
                                          "MODEL.DEVICE", "cpu"])
    train_net.prepare(args)
    for name, folder in ((JSON_TRAIN, "train_images"), (JSON_TEST, "val_images")):
        files = [Path(d["file_name"]) for d in DatasetCatalog.get(name)]
        assert len(files) == 2 and all(f.is_file() and f.is_relative_to(data / folder) for f in files)

    swapped = train_net.parser().parse_args(["--config", "demo_sharp_R18_cpu", *jsons, "--train-image-root",
                                             str(data / "val_images"), "--test-image-root", str(data / "train_images"),
                                             "MODEL.DEVICE", "cpu"])
    with pytest.raises(SetupError, match=r"train\.json: its image .* is not in .*val_images"):
        train_net.prepare(swapped)


def test_one_root_for_both_positionally(data):
    """register_json_datasets(cfg, train_json, test_json, image_root), as benchmarks call it."""
    cfg = get_sharp_cfg("demo_sharp_R18_cpu", ["MODEL.DEVICE", "cpu"])
    register_json_datasets(cfg, data / "old" / "train.json", data / "old" / "val.json", data / "stage")
    assert MetadataCatalog.get(JSON_TRAIN).image_root == MetadataCatalog.get(JSON_TEST).image_root == str(data / "stage")
    assert all(Path(d["file_name"]).is_file() for d in DatasetCatalog.get(JSON_TEST))


@pytest.mark.parametrize("workers", [0, 1, 4])
def test_cpu_threads_use_every_core_whatever_the_workers(monkeypatch, workers):
    """One process on the CPU gets a torch thread per core: its data-loader workers mostly wait."""
    cfg = get_sharp_cfg()
    cfg.MODEL.DEVICE, cfg.DATALOADER.NUM_WORKERS = "cpu", workers
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        set_cpu_threads(cfg)
        assert torch.get_num_threads() == os.cpu_count()
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        set_cpu_threads(cfg)  # an explicit OMP_NUM_THREADS wins
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
