"""The training loop's own pieces: progress by time as well as by iterations (a CPU iteration
of a large model can take a minute, and Detectron2 writes its progress line only every 20
iterations), and the sampler that repeats rare stains."""
import itertools
import json

import cv2
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import JSONWriter

from sharp_fpn.config import get_sharp_cfg
from sharp_fpn.data import convert_dsb2018, make_synthetic_dataset
from sharp_fpn.engine import TimedPeriodicWriter, Trainer, kind_repeat_tensor, register_json_datasets


class LinearFit(torch.nn.Module):
    """The smallest real model SimpleTrainer can train: a least-squares line."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, batch):
        x, y = batch
        return {"loss": torch.nn.functional.mse_loss(self.linear(x), y)}


def written_iterations(path, seconds, iterations=5):
    model = LinearFit()
    batches = itertools.repeat((torch.randn(8, 2), torch.randn(8, 1)))
    trainer = SimpleTrainer(model, batches, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([TimedPeriodicWriter([JSONWriter(str(path))], period=20, seconds=seconds)])
    trainer.train(0, iterations)
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


def test_writes_when_the_time_is_up(tmp_path):
    assert written_iterations(tmp_path / "slow.json", seconds=0) == [0, 1, 2, 3, 4]


def test_fast_iterations_keep_the_period(tmp_path):
    assert written_iterations(tmp_path / "fast.json", seconds=3600) == [4]  # the last iteration only


class ImpatientTrainer(Trainer):
    PROGRESS_SECONDS = 0.0


def test_trainer_writes_progress_by_time(tmp_path):
    make_synthetic_dataset(tmp_path / "stage", num_images=2, size=(64, 64), seed=0)
    convert_dsb2018(tmp_path / "stage", tmp_path / "ann", val_fraction=0.0, workers=1)
    cfg = get_sharp_cfg("demo_sharp_R18_cpu", [
        "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
        "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1", "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    register_json_datasets(cfg, tmp_path / "ann" / "train.json")
    cfg.DATASETS.TEST = ()
    trainer = ImpatientTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.json").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [0, 1, 2]  # Detectron2's period of 20 writes only 2
    assert all("total_loss" in row for row in rows)


def test_rare_stains_are_repeated(tmp_path):
    """DATALOADER.KIND_REPEAT_THRESHOLD: an inverted (brightfield) image among fluorescence ones
    gets a repeat factor above 1 from its pixels, and the loader built with it yields batches."""
    make_synthetic_dataset(tmp_path / "stage", num_images=4, size=(64, 64), seed=0, styles=("grey_rgba",))
    convert_dsb2018(tmp_path / "stage", tmp_path / "ann", val_fraction=0.0, workers=1)
    dicts = json.loads((tmp_path / "ann" / "train.json").read_text())["images"]
    image_path = tmp_path / "stage" / dicts[0]["file_name"]
    cv2.imwrite(str(image_path), 255 - cv2.imread(str(image_path), cv2.IMREAD_COLOR))  # dark nuclei, bright field
    cfg = get_sharp_cfg("demo_sharp_R18_cpu", [
        "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "64", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.KIND_REPEAT_THRESHOLD", "0.5",
    ])
    register_json_datasets(cfg, tmp_path / "ann" / "train.json")
    dataset = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    factors = kind_repeat_tensor(dataset, cfg.DATALOADER.KIND_REPEAT_THRESHOLD).tolist()
    brightfield = [d["file_name"] == str(image_path) for d in dataset]
    assert sum(brightfield) == 1
    assert [f for f, b in zip(factors, brightfield) if b] == [pytest.approx((0.5 * 4 / 1) ** 0.5)]
    assert [f for f, b in zip(factors, brightfield) if not b] == [1.0, 1.0, 1.0]
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert len(batch) == 2 and all(len(d["instances"]) > 0 for d in batch)
