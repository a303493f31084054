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
    assert len(configs) >= 8
    for config in configs:
        model = build_model(tiny_cfg(tmp_path, str(config)))
        assert isinstance(model, SemanticUNet)


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


def test_detectron2_training_loop_runs_and_evaluates(tmp_path):
    cfg = tiny_cfg(tmp_path, "configs/unet_nested_ds.yaml")
    trainer = UNetTrainer(cfg)
    trainer.train()
    results = UNetTrainer.test(cfg, trainer.model)
    assert 0 <= results["foreground"]["iou"] <= 100 and results["foreground"]["images"] == 3
    assert (tmp_path / "model_final.pth").is_file()


def test_pruning_level_without_its_head_is_refused_at_build(tmp_path):
    with pytest.raises(ValueError, match="PRUNE_LEVEL = 2 needs a head on X\\(0,2\\)"):
        build_model(tiny_cfg(tmp_path, "configs/unet_sharp.yaml", "MODEL.UNET.PRUNE_LEVEL", "2"))
