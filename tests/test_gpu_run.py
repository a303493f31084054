"""The prepared GPU run: its data bundle, its schedule, and the whole script as a CPU dry run."""
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_data  # noqa: E402
import gpu_schedule  # noqa: E402
from sharp_fpn.data.image_io import read_image  # noqa: E402
from sharp_fpn.data.synthetic import make_synthetic_dataset  # noqa: E402
from sharp_fpn.unet.data import load_dsb2018_semantic, read_dsb2018_semantic  # noqa: E402


def test_bundle_is_lossless_and_serves_the_unet_loader(tmp_path):
    stage = tmp_path / "stage1_train"
    make_synthetic_dataset(stage, num_images=5, size=(64, 80), seed=3)  # every file kind, 16-bit TIFF too
    manifest = gpu_data.pack(stage, tmp_path / "bundle")
    assert manifest["splits"]["train"]["images"] + manifest["splits"]["val"]["images"] == 5
    assert not (tmp_path / "bundle.partial").exists()

    paths = gpu_data.unpack(tmp_path / "bundle", tmp_path / "data")
    for split in gpu_data.SPLITS:
        dataset = json.loads(Path(paths[f"{split}_json"]).read_text())
        assert len(dataset["annotations"]) == manifest["splits"][split]["nuclei"] > 0
        for image in dataset["images"]:
            stored = Path(paths["image_root"]) / image["file_name"]
            original = next((stage / Path(image["file_name"]).stem / "images").iterdir())
            assert stored.suffix == ".webp"
            assert np.array_equal(read_image(stored, format="RGB"), read_image(original, format="RGB"))
        assert (tmp_path / "data" / dataset["info"]["image_root"]).resolve() == Path(paths["image_root"])

    cached = gpu_data.semantic(tmp_path / "data", tmp_path / "cache", size=32)
    from_bundle = load_dsb2018_semantic(paths["image_root"], 32, str(tmp_path / "cache"))  # the cache, no masks
    from_folder = read_dsb2018_semantic(stage, 32)  # the mask PNGs
    assert cached.is_file() and sorted(from_bundle.ids) == sorted(from_folder.ids)
    for image_id in from_folder.ids:
        a, b = from_bundle.subset([image_id]), from_folder.subset([image_id])
        assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)


def test_bundle_names_a_missing_file(tmp_path):
    with pytest.raises(SystemExit, match="train.json.gz: missing"):
        gpu_data.unpack(tmp_path / "nothing", tmp_path / "data")


def test_schedule_fills_the_budget_with_every_necks_work():
    bench = {"args": {"batch": 8}, "machine": {"device_name": "test"},
             "rows": [{"variant": "plain", "train_step_s": 0.8}, {"variant": "sharp_pwdw", "train_step_s": 1.2},
                      {"variant": "sharp", "train_step_s": 2.0}]}
    assert gpu_schedule.bench_variant("sharp:CONV=3x3") == "sharp"
    assert gpu_schedule.bench_variant("#") == gpu_schedule.bench_variant("sharp:CONV=pw_dw") == "sharp_pwdw"
    # seconds per image: plain 0.1, sharp (pw_dw) 0.15, nested not benchmarked -> the slowest, 0.25
    plan = gpu_schedule.plan(bench, ["plain", "sharp", "nested"], configs=2, ims_per_batch=4, seconds=200, safety=0.5)
    assert plan["seconds_per_image"] == {"plain": 0.1, "sharp": 0.15, "nested": 0.25}
    assert math.isclose(plan["gpu_s_per_iteration"], 2 * 4 * 0.5)
    assert plan["iterations"] == 25  # 0.5 * 200 s / 4 s
    assert gpu_schedule.plan(bench, ["plain"], 1, 4, 200, 0.5, high=100)["iterations"] == 100


@pytest.mark.timeout(600)
def test_gpu_run_dry_run_on_cpu(tmp_path):
    """scripts/gpu_run.sh end to end at a tiny size: every part runs and reports."""
    env = {**os.environ, "PYTHON": sys.executable, "GPU_WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    env.pop("GPU_DATA", None)
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--tiny", "--device", "cpu",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["files.tar.gz", "gpu_run.log", "results.json", "summary.md"]
    results = json.loads((out / "results.json").read_text())
    assert [(p["part"], p["status"]) for p in results["parts"]] == [
        ("setup", "ok"), ("a", "ok"), ("b", "ok"), ("c", "ok"), ("d", "ok")]

    assert {r["config"] for r in results["smoke"]["rows"]} == {"mask_rcnn_sharp_R50.yaml", "unet_sharp_ds.yaml"}
    assert all(r["ok"] and r["output_devices"] == ["cpu"] for r in results["smoke"]["rows"])
    assert [r["variant"] for r in results["bench"]["rows"]] == ["plain", "sharp_pwdw"]
    assert all(r["train_images_per_s"] > 0 for r in results["bench"]["rows"])

    assert results["necks"]["iterations"] == "2"  # the schedule, capped for the dry run
    rows = results["necks"]["configs"]["demo_sharp_R18_cpu"]["rows"]
    assert sorted(r["scheme"] for r in rows) == ["plain", "sharp"]
    assert all(0 <= r["nuclei/dsb_score"] <= 1 for r in rows)

    (run,) = results["unet"]["runs"]
    assert run["run"] == "unet#_VGG16" and 0 <= run["final"]["iou"] <= 1
    summary = (out / "summary.md").read_text()
    assert "### c. Table 2, lower part" in summary and "| plain |" in summary
    with tarfile.open(out / "files.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"./a/gpu_smoke.json", "./b/gpu_bench.json", "./parts.tsv", "./log/setup.log"} <= names
    assert not any(name.endswith(".pth") for name in names)
