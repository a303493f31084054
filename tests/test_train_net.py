"""tools/train_net.py end to end at a tiny size: train, kill and resume, 2 CPU processes,
--eval-only, a clear stop on a non-finite loss, what the terminal and log.txt show, and a
resumed run that had already finished."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sharp_fpn.data import convert_dsb2018, make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "TEST.DETECTIONS_PER_IMAGE", "20",
    "SOLVER.WARMUP_ITERS", "1", "TEST.EVAL_PERIOD", "0",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsb")
    make_synthetic_dataset(root / "stage", num_images=4, size=(64, 64), seed=0)
    convert_dsb2018(root / "stage", root / "ann", val_fraction=0.5, seed=0)
    return root


def train_net(data, out, *extra, opts=(), wait=True, env=None):
    cmd = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config", "demo_sharp_R18_cpu.yaml",
           "--train-json", str(data / "ann" / "train.json"), "--test-json", str(data / "ann" / "val.json"),
           *extra, *TINY, "OUTPUT_DIR", str(out), *opts]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One 3-iteration run with the demo config's own data-loader worker, shared by the tests
    of what it leaves: its output folder and what it printed."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run = train_net(data, out, opts=["SOLVER.MAX_ITER", "3", "DATALOADER.NUM_WORKERS", "1"])
    assert run.returncode == 0, run.stdout + run.stderr
    return out, run.stdout + run.stderr


def test_train_then_eval_only(data, trained, tmp_path):
    out, _ = trained
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    assert list((out).glob("events.out.tfevents.*")), "TensorBoard events are written"
    metrics = json.loads((out / "inference" / "sharp_fpn_json_test" / "metrics.json").read_text())
    assert {"bbox", "segm", "nuclei"} <= set(metrics)

    again = train_net(data, tmp_path / "eval", "--eval-only", opts=["MODEL.WEIGHTS", str(out / "model_final.pth")])
    assert again.returncode == 0, again.stdout + again.stderr
    evaluated = json.loads((tmp_path / "eval" / "inference" / "sharp_fpn_json_test" / "metrics.json").read_text())
    assert evaluated["nuclei"]["dsb_score"] == pytest.approx(metrics["nuclei"]["dsb_score"])
    assert not list((tmp_path / "eval").glob("model_*.pth")), "--eval-only does not train"


def test_terminal_shows_the_run_and_log_txt_keeps_every_detail(trained):
    out, printed = trained
    lines = printed.splitlines()
    first_progress = next(i for i, line in enumerate(lines) if " iter: " in line and "eta:" in line)
    assert first_progress <= 40, "\n".join(lines[:first_progress])
    before = "\n".join(lines[:first_progress])
    assert "config " + str(ROOT / "configs" / "demo_sharp_R18_cpu.yaml") in before
    assert len([line for line in lines if "model: Mask R-CNN, R-18 + sharp FPN neck" in line]) == 1
    assert any("Loaded 2 images in COCO format from" in line and line.endswith("train.json")
               for line in lines[:first_progress])
    for noise in ("Environment info", "Running with full config", "is_fx_tracing", "not writable", "CUDA_HOME",
                  "Loading from  ", "\x1b["):
        assert noise not in printed, noise
    log = (out / "log.txt").read_text()
    for detail in ("Environment info", "Running with full config", "ROI_HEADS:", "GeneralizedRCNN(", "iter: 2"):
        assert detail in log, detail
    assert "\x1b[" not in log, "log.txt has no colour codes"


def test_resuming_a_finished_run_says_so(data, trained):
    out, _ = trained
    metrics = out / "inference" / "sharp_fpn_json_test" / "metrics.json"
    written = metrics.stat().st_mtime_ns
    run = train_net(data, out, "--resume", opts=["SOLVER.MAX_ITER", "3"])
    assert run.returncode == 0, run.stdout + run.stderr
    printed = run.stdout + run.stderr
    assert "this run already finished (3 of SOLVER.MAX_ITER 3 iterations)" in printed
    assert "Start inference" not in printed and "lr: N/A" not in printed
    assert metrics.stat().st_mtime_ns == written, "not evaluated again"


def test_resume_after_kill(data, tmp_path):
    out = tmp_path / "run"
    proc = train_net(data, out, opts=["SOLVER.MAX_ITER", "200", "SOLVER.CHECKPOINT_PERIOD", "2"], wait=False)
    deadline = time.time() + 300
    while not (out / "model_0000003.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = (out / "last_checkpoint").read_text().strip()
    assert last.startswith("model_0"), proc.stdout.read()
    saved_at = int(last[len("model_"):-len(".pth")])

    resumed = train_net(data, out, "--resume", opts=["SOLVER.MAX_ITER", str(saved_at + 4)])
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log
    # It continues right after the last checkpoint the killed run left, not from zero.
    assert f"Loading from {out / last}" in log
    assert f"Starting training from iteration {saved_at + 1}" in log
    assert (out / "model_final.pth").is_file()


def test_two_cpu_processes(data, tmp_path):
    out = tmp_path / "ddp"
    run = train_net(data, out, "--num-gpus", "2", opts=["SOLVER.MAX_ITER", "2"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "world size: 2" in (run.stdout + run.stderr).lower() or "Rank of current process: 0. World size: 2" in (out / "log.txt").read_text()
    assert (out / "model_final.pth").is_file()


def test_non_finite_loss_is_a_clear_error(data, tmp_path):
    run = train_net(data, tmp_path / "nan", opts=["SOLVER.MAX_ITER", "20", "SOLVER.BASE_LR", "1e12"])
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training stopped, it diverged: ") and "Inf" in last or "NaN" in last
    assert "SOLVER.BASE_LR" in last


def test_missing_json_is_one_line(data, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), "--config", "demo_sharp_R18_cpu",
                          "--train-json", str(tmp_path / "nope.json"), "MODEL.DEVICE", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope.json'}: dataset JSON not found"


def test_unet_family_through_the_same_tool(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config", "unet_sharp_ds.yaml",
         "DATASETS.DSB2018_SEMANTIC.ROOT", "synthetic", "DATASETS.DSB2018_SEMANTIC.CACHE_DIR", "",
         "INPUT.UNET.SIZE", "32", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "MODEL.DEVICE", "cpu",
         "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "UNet family 'unet#', vgg_blocks encoder, deep supervision" in run.stdout  # the model in one line
    assert "copypaste: Task: foreground" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "model_final.pth").is_file()
