#!/usr/bin/env python
"""Train or evaluate Mask R-CNN with a skip-scheme FPN (plain, ++, +++, #) on nuclei, or a
model of the UNet family (configs/unet_*.yaml) for semantic segmentation.

    python tools/train_net.py --config mask_rcnn_sharp_R101.yaml
    python tools/train_net.py --config-file configs/mask_rcnn_plain_R50.yaml --num-gpus 2
    python tools/train_net.py --config mask_rcnn_sharp_R50 --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config unet_sharp_ds.yaml DATASETS.DSB2018_SEMANTIC.ROOT STAGE_DIR

Detectron2's usual flags and trailing KEY VALUE overrides all work.
"""
import logging
import sys

import sharp_fpn  # first: registers backbones and datasets, quiets known deprecation noise
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from sharp_fpn.engine import load_model_for_eval, register_json_datasets, set_cpu_threads, trainer_class


def setup(args):
    cfg = sharp_fpn.get_sharp_cfg(args.config or args.config_file, args.opts)
    register_json_datasets(cfg, args.train_json, args.test_json, args.image_root)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sharp_fpn")
    set_cpu_threads(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    trainer_cls = trainer_class(cfg)  # Mask R-CNN, or the UNet family (configs/unet_*.yaml)
    if args.eval_only:
        model = load_model_for_eval(cfg)
        results = trainer_cls.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def parser():
    p = default_argument_parser()
    p.add_argument("--config", default="", metavar="NAME",
                   help="a shipped config by file name (e.g. mask_rcnn_sharp_R101.yaml) or any path")
    p.add_argument("--train-json", help="train on this converted COCO JSON instead of DATASETS.TRAIN")
    p.add_argument("--test-json", help="evaluate on this converted COCO JSON instead of DATASETS.TEST")
    p.add_argument("--image-root", help="folder the JSONs' file_name are relative to "
                   "(default: the JSON's folder; for prepare_dsb2018.py output, its STAGE_DIR)")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def cli(argv=None):
    args = parser().parse_args(argv)
    if not (args.config or args.config_file):
        parser().error("give --config NAME or --config-file PATH")
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except FloatingPointError as e:
        if args.verbose:
            raise
        first = str(e).splitlines()[0]
        sys.exit(f"error: training stopped, it diverged: {first} Lower SOLVER.BASE_LR or raise SOLVER.WARMUP_ITERS; "
                 "with random weights use GN/BN, not FrozenBN. Resume from the last checkpoint with --resume.")
    except (FileNotFoundError, ValueError, KeyError) as e:
        if args.verbose:
            raise
        logging.getLogger("detectron2").debug("error", exc_info=True)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli()
