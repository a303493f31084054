"""Shipped models: the export to fp16, the checksum, loading by name, and the shipped model's
nucleus counts on the example images (when its weights are there)."""
import functools
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from test_predict import one_torch_thread, synthetic_images, tiny_checkpoint, tiny_predictor  # noqa: F401

from sharp_fpn import get_sharp_cfg
from sharp_fpn.demo import EXAMPLES_DIR, example_counts
from sharp_fpn.predict import NucleiPredictor, SetupError
from sharp_fpn.predict.pretrained import (SHIPPED_MODELS, ShippedModel, export_model, file_sha256, read_state_dict,
                                          shipped_model)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny test model exported in the shipped form, and registered as a ShippedModel."""
    folder = tmp_path_factory.mktemp("pretrained")
    result = export_model(tiny_checkpoint() / "model_final.pth", folder, "tiny")
    return result, ShippedModel("tiny", "tiny.yaml", "tiny.pth", result.sha256, folder=folder)


def one_line_error(call) -> str:
    with pytest.raises(SetupError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_export_writes_the_fp16_model_state_and_its_config(exported):
    result, model = exported
    assert result.weights == model.weights_path and result.config == model.config_path
    assert result.num_bytes == model.weights_path.stat().st_size and result.sha256 == file_sha256(model.weights_path)
    stored = torch.load(model.weights_path, map_location="cpu", weights_only=True)
    assert list(stored) == ["model"]  # no optimizer, scheduler or iteration
    original = torch.load(tiny_checkpoint() / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert stored["model"].keys() == original.keys()
    for key, value in stored["model"].items():
        assert value.dtype == (torch.float16 if original[key].is_floating_point() else original[key].dtype), key
    cfg = get_sharp_cfg(str(model.config_path))
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.FPN.OUT_CHANNELS == 32 and cfg.MODEL.WEIGHTS == "" == cfg.OUTPUT_DIR
    assert result.registry_entry("tiny") == f'ShippedModel("tiny", "tiny.yaml", "tiny.pth", sha256="{result.sha256}")'


def test_from_pretrained_loads_float32_and_predicts_like_the_original(exported):
    _, model = exported
    # exact: this checks the float16 file, not the faster bfloat16 path (test_predict_precision.py)
    shipped = NucleiPredictor.from_pretrained(model, device="cpu", score_threshold=0.0, exact=True)
    assert shipped.model_name == "tiny" and shipped.weights == str(model.weights_path)
    original = torch.load(tiny_checkpoint() / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    for key, value in shipped.model.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32
            assert torch.equal(value, original[key].half().float()), key
    for image in synthetic_images()[:2]:
        a, b = shipped.predict(image), tiny_predictor(exact=True).predict(image)
        assert a.num_objects == b.num_objects > 0
        assert ((a.labels > 0) == (b.labels > 0)).mean() > 0.99


def test_a_damaged_file_is_refused(exported, tmp_path):
    _, model = exported
    shutil.copy(model.config_path, tmp_path / "tiny.yaml")
    data = bytearray(model.weights_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "tiny.pth").write_bytes(bytes(data))
    damaged = ShippedModel("tiny", "tiny.yaml", "tiny.pth", model.sha256, folder=tmp_path)
    message = one_line_error(lambda: NucleiPredictor.from_pretrained(damaged, device="cpu"))
    assert str(tmp_path / "tiny.pth") in message and "damaged" in message and "reinstall" in message


def test_a_missing_file_says_what_to_do(exported, tmp_path):
    _, model = exported
    missing = ShippedModel("tiny", "tiny.yaml", "tiny.pth", model.sha256, folder=tmp_path)
    message = one_line_error(missing.load_state_dict)
    assert str(tmp_path / "tiny.pth") in message and "missing" in message and "--weights" in message


def test_a_model_without_checksum_is_not_loaded(exported):
    _, model = exported
    unrecorded = ShippedModel("tiny", "tiny.yaml", "tiny.pth", None, folder=model.folder)
    assert "not in this version yet" in one_line_error(unrecorded.load_state_dict)


def test_unknown_names_list_the_known_ones():
    message = one_line_error(lambda: shipped_model("nope"))
    assert "'nope'" in message and ", ".join(SHIPPED_MODELS) in message
    assert shipped_model("nuclei") is SHIPPED_MODELS["nuclei"]


def test_read_state_dict_refuses_what_is_not_a_state_dict(tmp_path):
    torch.save({"model": {"a": 1}}, tmp_path / "odd.pth")
    assert "no model state dict" in one_line_error(lambda: read_state_dict(tmp_path / "odd.pth"))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    assert "cannot read a checkpoint" in one_line_error(lambda: read_state_dict(tmp_path / "text.pth"))


def test_export_checks_the_config_against_the_weights(tmp_path):
    message = one_line_error(lambda: export_model(tiny_checkpoint() / "model_final.pth", tmp_path, "x",
                                                  config=ROOT / "configs" / "mask_rcnn_plain_R50.yaml"))
    assert "do not match" in message and "mask_rcnn_plain_R50.yaml" in message
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.fixture(scope="module")
def export_cli():
    spec = importlib.util.spec_from_file_location("export_tool", ROOT / "tools" / "export_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_cli_prints_size_checksum_and_registry_line(export_cli, capsys, tmp_path):
    code = export_cli.main([str(tiny_checkpoint() / "model_final.pth"), "--name", "mini", "--output-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    sha = file_sha256(tmp_path / "mini.pth")
    assert code == 0 and err == ""
    assert f"sha256 {sha}" in out and "MiB" in out and f'ShippedModel("mini", "mini.yaml", "mini.pth", sha256="{sha}")' in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini.pth", "mini.yaml"]


def test_export_cli_blanks_the_training_machines_paths(export_cli, capsys, tmp_path):
    config = yaml.safe_load((tiny_checkpoint() / "config.yaml").read_text())
    config["OUTPUT_DIR"] = "/home/someone/runs/final"
    config["DATASETS"]["DSB2018_SEMANTIC"]["ROOT"] = "~/data/stage1_train"
    config["DATASETS"]["PROPOSAL_FILES_TRAIN"] = ["../shared/proposals.pkl"]
    (tmp_path / "train_config.yaml").write_text(yaml.safe_dump(config))
    code = export_cli.main([str(tiny_checkpoint() / "model_final.pth"), "--config", str(tmp_path / "train_config.yaml"),
                            "--name", "mini", "--output-dir", str(tmp_path / "out")])
    out, _ = capsys.readouterr()
    assert code == 0 and "blanked: " in out
    text = (tmp_path / "out" / "mini.yaml").read_text()
    assert "someone" not in text and "~/" not in text and "../" not in text
    cfg = get_sharp_cfg(str(tmp_path / "out" / "mini.yaml"))
    assert cfg.OUTPUT_DIR == "" and cfg.DATASETS.DSB2018_SEMANTIC.ROOT == "" and cfg.DATASETS.PROPOSAL_FILES_TRAIN == ()
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.FPN.OUT_CHANNELS == 32  # the rest as it was


def test_shipped_configs_hold_no_machine_path(export_cli, tmp_path):
    for model in SHIPPED_MODELS.values():
        shutil.copy(model.config_path, tmp_path / "copy.yaml")
        assert export_cli.blank_machine_paths(tmp_path / "copy.yaml") == [], model.config_path


def test_export_cli_missing_checkpoint_is_one_line(export_cli, capsys, tmp_path):
    code = export_cli.main([str(tmp_path / "nowhere.pth"), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not (tmp_path / "out").exists()
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "nowhere.pth: no such file" in err


def test_examples_are_listed_with_their_counts():
    examples = example_counts()
    assert len(examples) == 4 and {"fluorescence", "brightfield"} <= {e["kind"] for e in examples}
    for example in examples:
        assert example["file"].is_file() and example["nuclei"] > 0
    ids = [line for line in (EXAMPLES_DIR / "dsb2018_ids.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert len(ids) == len(examples)


SHIPPED = SHIPPED_MODELS["nuclei"]


@functools.lru_cache(maxsize=None)
def shipped_predictor():
    return NucleiPredictor.from_pretrained("nuclei", device="cpu")


@pytest.mark.skipif(not SHIPPED.weights_path.is_file(),
                    reason=f"the shipped model's weights {SHIPPED.weights_path.name} are not in this copy yet "
                           "(trained separately, issue 12); drop them in with tools/export_model.py")
@pytest.mark.parametrize("example", example_counts(), ids=lambda e: e["file"].name)
def test_shipped_model_counts_the_example_nuclei_within_15_percent(example):
    found = shipped_predictor().predict(example["file"]).num_objects
    assert abs(found - example["nuclei"]) <= 0.15 * example["nuclei"], (example["file"].name, found, example["nuclei"])
