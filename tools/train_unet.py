#!/usr/bin/env python
"""Train or evaluate a UNet-family model (configs/unet_*.yaml) with Detectron2's loop.

    python tools/train_unet.py --config-file configs/unet_sharp_ds.yaml \
        DATASETS.DSB2018_SEMANTIC.ROOT /data/dsb2018/stage1_train MODEL.DEVICE cpu
    python tools/train_unet.py --config-file configs/unet_sharp_ds.yaml --eval-only \
        MODEL.WEIGHTS output/unet_sharp_ds/model_final.pth MODEL.UNET.PRUNE_LEVEL 2

A separate tool from train_net.py because only the Trainer differs (semantic loaders, the
foreground IoU/Dice evaluator, Adam); every option is Detectron2's own.
"""
import logging
import sys

import sharp_fpn  # noqa: F401  (first: registers everything, quiets known deprecation noise)
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from sharp_fpn.unet import add_unet_config
from sharp_fpn.unet.trainer import UNetTrainer


def setup(args):
    cfg = get_cfg()
    add_unet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = UNetTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return UNetTrainer.test(cfg, model)
    trainer = UNetTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    if not args.config_file:
        sys.exit("train_unet.py: --config-file is required (e.g. configs/unet_sharp_ds.yaml)")
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
