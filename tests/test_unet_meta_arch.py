import logging
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from sharp_fpn.unet import SemanticUNet, add_unet_config
from sharp_fpn.unet.trainer import UNetTrainer

TINY = "[4,8,16,32,64]"


def tiny_cfg(tmp_path, config="configs/unet_sharp_ds.yaml", *opts):
    cfg = get_cfg()
    add_unet_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.UNET.FILTERS", TINY, "INPUT.UNET.SIZE", "64",
        "DATASETS.DSB2018_SEMANTIC.ROOT", "synthetic", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0",
        "OUTPUT_DIR", str(tmp_path), *opts,
    ])
    return cfg


def test_every_shipped_config_builds_its_model(tmp_path):
    configs = sorted(Path("configs").glob("unet_*.yaml"))
    assert len(configs) >= 16
    for config in configs:
        model = build_model(tiny_cfg(tmp_path, str(config)))
        assert isinstance(model, SemanticUNet)
        encoder = config.stem.split("_")[-1]
        assert model.net.encoder_name == (encoder if encoder in ("VGG16", "R101") else "vgg_blocks"), config


def test_meta_arch_trains_and_infers_on_detectron2_inputs(tmp_path):
    model = build_model(tiny_cfg(tmp_path, "configs/unet_sharp_ds.yaml", "MODEL.UNET.CGM", "True"))
    batch = [{"image": torch.rand(3, 64, 64) * 255, "sem_seg": (torch.rand(64, 64) > 0.8).long()} for _ in range(2)]
    losses = model(batch)
    assert set(losses) == {"loss_seg", "loss_cgm"} and all(v.isfinite() for v in losses.values())
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
        model.prune_level = 2
        pruned = model(batch)
    assert outputs[0]["sem_seg"].shape == pruned[0]["sem_seg"].shape == (1, 64, 64)
    assert outputs[0]["readout"] == "not pruned, accurate mode: mean of heads X(0,1..4)"
    assert pruned[0]["readout"] == "pruned to L2: head X(0,2)"


def test_detectron2_training_loop_runs_and_evaluates(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path, "configs/unet_nested_ds.yaml", "MODEL.UNET.PRUNE_LEVEL", "3")
    trainer = UNetTrainer(cfg)
    trainer.train()  # its final evaluation logs a table too: count only the one of test()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sharp_fpn.unet.evaluator"):
        results = UNetTrainer.test(cfg, trainer.model)
    scores = results["foreground"]
    assert list(scores) == ["iou", "iou_pooled", "iou_batch128", "miou_fg_bg", "soft_dice", "dice", "dice_pooled",
                            "images"]
    assert all(0 <= value <= 1 for name, value in scores.items() if name != "images") and scores["images"] == 3
    # one table, metric | value, in the units of Mask R-CNN's nuclei/fg_iou, naming the pruned model
    (log,) = [r.getMessage() for r in caplog.records if "| metric" in r.getMessage()]
    assert "pruned to L3: head X(0,3)" in log
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in log.splitlines() if line[:1] == "|"]
    rows = dict(cells)
    assert rows.pop("metric") == "value" and rows.pop(":-------------") == "--------:"
    assert rows == {name: f"{value:.0f}" if name == "images" else f"{value:.4f}" for name, value in scores.items()}
    assert (tmp_path / "model_final.pth").is_file()


def test_encoder_keys_reach_the_model(tmp_path):
    model = build_model(tiny_cfg(tmp_path, "configs/unet_sharp_VGG16.yaml", "MODEL.UNET.ENCODER_NORM", "GN"))
    assert model.net.encoder_name == "VGG16" and model.net.encoder_norm == "GN"
    with pytest.raises(FileNotFoundError, match="none.pth: encoder weights not found"):
        build_model(tiny_cfg(tmp_path, "configs/unet_plain_R101.yaml", "MODEL.UNET.ENCODER_WEIGHTS", "none.pth"))


def test_pruning_level_without_its_head_is_refused_at_build(tmp_path):
    with pytest.raises(ValueError, match="PRUNE_LEVEL = 2 needs a head on X\\(0,2\\)"):
        build_model(tiny_cfg(tmp_path, "configs/unet_sharp.yaml", "MODEL.UNET.PRUNE_LEVEL", "2"))
