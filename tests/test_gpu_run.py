"""The prepared GPU window: its data bundle, its time box, and the whole script as a CPU dry run."""
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_data  # noqa: E402
import gpu_train  # noqa: E402
from sharp_fpn import get_sharp_cfg  # noqa: E402
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

    held = next(Path(p).stem for p in (tmp_path / "bundle" / "images").iterdir())
    (tmp_path / "ids.txt").write_text(f"# the shipped model's examples\n{held}\n")
    split = gpu_data.holdout(tmp_path / "data", tmp_path / "ids.txt")  # as prepare_dsb2018.py --val-ids
    rest, kept = (json.loads(Path(split[f"{name}_json"]).read_text()) for name in ("train_all", "holdout"))
    assert [Path(im["file_name"]).stem for im in kept["images"]] == [held]
    assert len(rest["images"]) == 4 and {a["image_id"] for a in kept["annotations"]} == {kept["images"][0]["id"]}
    every = [a["id"] for split_ in gpu_data.SPLITS
             for a in json.loads(Path(paths[f"{split_}_json"]).read_text())["annotations"]]
    assert sorted(a["id"] for a in rest["annotations"] + kept["annotations"]) == sorted(every)
    (tmp_path / "ids.txt").write_text("not-an-image\n")
    with pytest.raises(SystemExit, match="not in the bundle: not-an-image"):
        gpu_data.holdout(tmp_path / "data", tmp_path / "ids.txt")

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


def test_runs_agree_on_the_smallest_fit_and_late_runs_adopt_it(tmp_path):
    plans = {}
    other = threading.Thread(target=lambda: plans.update(b=gpu_train.agree(tmp_path, "b", 120, runs=2, wait_s=10)))
    other.start()
    time.sleep(0.3)  # b waits for a
    plans["a"] = gpu_train.agree(tmp_path, "a", 90, runs=2, wait_s=10)
    other.join()
    assert plans["a"] == plans["b"] == {"iterations": 90, "fits": {"a": 90, "b": 120}, "failed": []}
    assert gpu_train.agree(tmp_path, "late", 10, runs=2, wait_s=10)["iterations"] == 90
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fit.json", "b.fit.json", "late.fit.json", "plan.json"]


def test_a_run_that_fails_before_the_plan_holds_no_one_up(tmp_path):
    argv = ["--name", "broken", "--config", "nuclei_R18_cpu.yaml", "--neck", "bogus", "--train-json", "t.json",
            "--val-json", "v.json", "--output-dir", str(tmp_path / "run"), "--device", "cpu", "--deadline", "0",
            "--plan-at", "0", "--plan-dir", str(tmp_path / "plan"), "--max-iter", "50"]
    with pytest.raises(ValueError, match="bogus"):
        gpu_train.main(argv)
    started = time.time()
    plan = gpu_train.agree(tmp_path / "plan", "ok", 30, runs=2, wait_s=10)
    assert plan == {"iterations": 30, "fits": {"broken": 50, "ok": 30}, "failed": ["broken"]}
    assert time.time() - started < 5


def test_time_box_refits_the_learning_rate_to_the_plan():
    cfg = get_sharp_cfg("nuclei_R18_cpu.yaml", ["SOLVER.WARMUP_ITERS", "10", "SOLVER.MAX_ITER", "100001"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    trainer = SimpleNamespace(cfg=cfg, optimizer=optimizer, iter=29, scheduler=None)
    box = gpu_train.TimeBox(SimpleNamespace())
    box.trainer, box.planned = trainer, 200
    box._refit_schedule()
    assert box.steps == [150, 184]

    def lr_at(iteration):
        trainer.scheduler.last_epoch = iteration - 1
        trainer.scheduler.step()
        return optimizer.param_groups[0]["lr"]

    assert lr_at(30) == pytest.approx(0.02) and lr_at(149) == pytest.approx(0.02)
    assert lr_at(150) == pytest.approx(0.002) and lr_at(199) == pytest.approx(0.0002)
    assert lr_at(5) < 0.02  # the config's warm-up, in iterations, as before the plan


@pytest.mark.timeout(600)
def test_gpu_run_dry_run_on_cpu(tmp_path):
    """scripts/gpu_run.sh end to end at a tiny size: both parts run, write their records and hand back their files."""
    env = {**os.environ, "PYTHON": sys.executable, "GPU_WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    for name in ("GPU_DATA", "OUT", "PARTS", "A_RUNS"):
        env.pop(name, None)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--tiny", "--device", "cpu",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    weights = ["nuclei_gpu.pth.part0", "nuclei_gpu.pth.part1", "nuclei_gpu_twin.pth.part0", "nuclei_gpu_twin.pth.part1"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["files.tar.gz", "gpu_run.log", "results.json", "summary.md", *weights])  # the device tool's 8 files
    assert all(p.stat().st_size <= 15 * 2**20 for p in out.iterdir())
    results = json.loads((out / "results.json").read_text())
    assert sorted((p["part"], p["status"]) for p in results["parts"]) == [("a", "ok"), ("b", "ok"), ("setup", "ok")]

    rows = results["a"]["rows"]  # one process per neck, the same agreed length
    assert sorted(r["name"] for r in rows) == ["plain_seed0", "sharp_seed0"]
    assert all(r["iterations"] == 2 and r["stopped_by"] == "plan" and 0 <= r["nuclei/dsb_score"] <= 1 for r in rows)
    assert results["a"]["plan"]["iterations"] == 2
    assert sorted(r["scheme"] for r in results["a"]["merged"]["rows"]) == ["plain", "sharp"]
    candidate, twin = sorted(results["b"]["rows"], key=lambda r: r["name"])
    assert (candidate["name"], candidate["export"], twin["export"]) == ("candidate", "nuclei_gpu.pth",
                                                                         "nuclei_gpu_twin.pth")

    summary = (out / "summary.md").read_text()
    assert "### a. Table 2 on R-101" in summary and "| plain | - | 0 |" in summary
    assert "| candidate | 2 (plan) |" in summary
    records = "inference/sharp_fpn_json_test/metrics.json"  # the evaluator's, with per-image rows
    with tarfile.open(out / "files.tar.gz") as tar:
        names = set(tar.getnames())
        per_image = json.load(tar.extractfile(f"./a/sharp_seed0/{records}"))
    assert {f"./a/plain_seed0/{records}", f"./b/twin/{records}", f"./b/candidate/{records}",
            "./b/candidate/nuclei_gpu.yaml", "./parts.tsv", "./log/setup.log"} <= names
    val = json.loads((tmp_path / "work" / "data" / "val.json").read_text())
    assert sorted(r["image_id"] for r in per_image["per_image"]) == sorted(im["id"] for im in val["images"])
    assert not any(name.endswith(".pth") for name in names)

    joined = tmp_path / "nuclei_gpu.pth"  # the parts join back into the shipped form
    joined.write_bytes(b"".join((out / name).read_bytes() for name in weights[:2]))
    state = torch.load(joined, map_location="cpu", weights_only=True)["model"]
    assert state and all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
