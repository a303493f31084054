"""tools/train_net.py across machines, on the loopback interface: two machine ranks of one
process each match a one-process run of the same total batch, only rank 0 writes, and a
killed rank stops the other with one line instead of a hang. Also the ranks that torchrun and
srun hand a process (``--dist-url env://``)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sharp_fpn.data import convert_dsb2018, make_synthetic_dataset
from sharp_fpn.engine import LauncherRanks, SetupError, launcher_ranks

ROOT = Path(__file__).resolve().parents[1]
# Tiny, and deterministic per image: no flips, every anchor and every proposal sampled (so no
# draw from a rank's own random stream), positives only the ground-truth boxes; with the same
# number of nuclei in both images every loss then has the same normaliser per image, and the
# mean over two ranks of one image each is the loss of one batch of both.
TINY = [
    "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SEED", "3",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.RANDOM_FLIP", "none", "DATASETS.TEST", "()",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "100000",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "100000", "MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.99]",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1000",
]


@pytest.fixture(scope="module")
def train_json(tmp_path_factory):
    """Two 64x64 synthetic images with the same number of nuclei."""
    root = tmp_path_factory.mktemp("dsb")
    ids = make_synthetic_dataset(root / "all", num_images=8, size=(64, 64), seed=0)
    counts = {i: len(list((root / "all" / i / "masks").iterdir())) for i in ids}
    pair = next([a, b] for k, a in enumerate(ids) for b in ids[k + 1:] if counts[a] == counts[b])
    for image_id in pair:
        shutil.copytree(root / "all" / image_id, root / "stage" / image_id)
    convert_dsb2018(root / "stage", root / "ann", val_fraction=0.0, workers=1)
    return root / "ann" / "train.json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(train_json, out, *flags, iterations=3, env=None):
    cmd = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config", "demo_sharp_R18_cpu.yaml",
           "--train-json", str(train_json), *flags, *TINY, "SOLVER.MAX_ITER", str(iterations), "OUTPUT_DIR", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def finish(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, out + err


def first_loss(out):
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert rows[0]["iteration"] == 0
    return rows[0]["total_loss"], rows[-1]["iteration"]


def test_two_machine_ranks_train_as_one_process(train_json, tmp_path):
    url = f"tcp://127.0.0.1:{free_port()}"
    # Each rank its own output folder, as on machines without a shared disk.
    ranks = [start(train_json, tmp_path / f"rank{r}", "--num-machines", "2", "--machine-rank", str(r), "--dist-url", url,
                   "--dist-timeout", "120") for r in (0, 1)]
    single = start(train_json, tmp_path / "single")
    results = [finish(p) for p in ranks + [single]]
    for code, printed in results:
        assert code == 0, printed
    assert sorted(p.name for p in (tmp_path / "rank0").glob("*.pth")) == ["model_final.pth"]
    assert {"metrics.json", "log.txt", "config.yaml", "last_checkpoint"} <= {p.name for p in (tmp_path / "rank0").iterdir()}
    assert [p.name for p in (tmp_path / "rank1").iterdir()] == ["log.txt.rank1"]  # its own log, nothing else
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "rank1" / "log.txt.rank1").read_text()
    assert " iter: 0 " in results[0][1] and " iter: " not in results[1][1]  # only rank 0 prints the progress
    (loss, last), (reference, _) = first_loss(tmp_path / "rank0"), first_loss(tmp_path / "single")
    assert last == 2
    assert loss == pytest.approx(reference, rel=1e-5)


def test_a_killed_rank_stops_the_other_with_one_line(train_json, tmp_path):
    """The srun path (env://, SLURM's variables); rank 1 is killed after the first step."""
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_LOCALID": "0",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    ranks = [start(train_json, tmp_path / f"rank{r}", "--dist-url", "env://", "--dist-timeout", "60", iterations=100000,
                   env={**slurm, "SLURM_PROCID": str(r)}) for r in (0, 1)]
    try:
        deadline = time.time() + 240
        while not (tmp_path / "rank0" / "metrics.json").exists() and time.time() < deadline and ranks[0].poll() is None:
            time.sleep(0.2)
        os.killpg(ranks[1].pid, signal.SIGKILL)
        killed_at = time.time()
        code, printed = finish(ranks[0], timeout=90)
    finally:
        for process in ranks:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert code == 1, printed
    assert time.time() - killed_at < 90
    last = printed.strip().splitlines()[-1]
    assert last.startswith("error: lost contact with another process of the distributed run"), printed[-2000:]
    assert "Traceback" not in printed and "Traceback" in (tmp_path / "rank0" / "log.txt").read_text()


TORCHRUN = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "node0"}
SRUN = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_TASKS_PER_NODE": "4(x2)", "MASTER_ADDR": "node0"}


@pytest.mark.parametrize("environ", [TORCHRUN, SRUN], ids=["torchrun", "srun"])
def test_launcher_ranks(environ):
    ranks = launcher_ranks(environ)
    assert ranks == LauncherRanks(rank=5, world_size=8, local_rank=1, local_world_size=4)
    assert ranks.machine_rank == 1


@pytest.mark.parametrize("environ, problem", [
    ({}, "RANK is not set"),
    ({**TORCHRUN, "MASTER_ADDR": ""}, "MASTER_ADDR is not set"),
    ({**TORCHRUN, "RANK": "6"}, "do not number the processes machine by machine"),
    ({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "4,3"}, "uneven"),
    ({**TORCHRUN, "WORLD_SIZE": "eight"}, "WORLD_SIZE is 'eight'"),
])
def test_launcher_ranks_errors(environ, problem):
    with pytest.raises(SetupError, match=problem):
        launcher_ranks(environ)
