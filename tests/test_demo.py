"""The CPU demo end to end at a tiny size: synthetic data, 4 training iterations, evaluation,
predictions, then a shipped-form model on the real example images (or the one-line skip)."""
import csv
from pathlib import Path

import pytest
import tifffile
from conftest import tiny_overrides
from test_predict import one_torch_thread, tiny_checkpoint  # noqa: F401

from sharp_fpn.demo import example_counts, format_examples, format_summary, predict_examples, run_demo
from sharp_fpn.predict.pretrained import ShippedModel, export_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny_shipped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped")
    exported = export_model(tiny_checkpoint() / "model_final.pth", folder, "tiny")
    return ShippedModel("tiny", "tiny.yaml", "tiny.pth", exported.sha256, folder=folder)


def test_demo_runs_end_to_end_and_predicts_the_examples(tmp_path, tiny_shipped):
    summary = run_demo(tmp_path, num_images=5, max_iter=4, opts=tiny_overrides(64), shipped_model=tiny_shipped)
    train = Path(summary["paths"]["weights"]).parent
    assert sorted(p.name for p in train.glob("*.pth")) == ["model_final.pth"]  # no intermediate checkpoints
    assert set(summary["trained"]) == set(summary["untrained"]) and "segm/AP" in summary["trained"]
    assert list(Path(summary["paths"]["predictions"]).glob("*_labels.tif"))

    examples = summary["examples"]
    truth = example_counts()
    assert examples["skipped"] is None and [row["file"] for row in examples["rows"]] == [t["file"].name for t in truth]
    folder = Path(summary["paths"]["examples"])
    for row, true in zip(examples["rows"], truth):
        stem = Path(row["file"]).stem
        assert row["true"] == true["nuclei"]
        assert row["predicted"] == tifffile.imread(folder / f"{stem}_labels.tif").max()
        assert (folder / f"{stem}_overlay.png").is_file()
        with open(folder / f"{stem}_objects.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == row["predicted"]
    text = format_summary(summary)
    assert "| example | kind | true count | predicted | difference |" in text
    assert f"| fluorescence.png | fluorescence | {truth[0]['nuclei']} |" in text


def test_examples_are_skipped_in_one_line_without_the_weights(tmp_path, tiny_shipped):
    absent = ShippedModel("tiny", "tiny.yaml", "tiny.pth", tiny_shipped.sha256, folder=tmp_path / "absent")
    examples = predict_examples(tmp_path / "out", absent)
    assert examples["rows"] == [] and str(absent.weights_path) in examples["skipped"]
    lines = format_examples(examples)
    assert len(lines) == 1 and "skipped" in lines[0]
    assert not (tmp_path / "out").exists()
