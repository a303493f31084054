#!/usr/bin/env python
"""Train or evaluate Mask R-CNN with a skip-scheme FPN (plain, ++, +++, #) on nuclei, or a model
of the UNet family (configs/unet_*.yaml) for semantic segmentation. Detectron2's train_net.py
with our reader, evaluator and checkpointer: its flags and trailing KEY VALUE overrides work."""
import logging
import os
import re
import sys
from datetime import timedelta

import sharp_fpn  # first: registers backbones, datasets and trainers, quiets known noise
import torch.distributed as dist
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.engine.launch import DEFAULT_TIMEOUT, _distributed_worker
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from sharp_fpn.config import resolve_config_path
from sharp_fpn.data.issues import DatasetError
from sharp_fpn.engine import (LauncherRanks, SetupError, check_run, launcher_ranks, load_config, load_model_for_eval,
                              register_json_datasets, set_cpu_threads, setup_logging, trainer_class)

logger = logging.getLogger("sharp_fpn.train_net")

EXAMPLES = """examples:
  # Dsb2018 as registered (dsb2018_train / dsb2018_val; convert it first with datasets/prepare_dsb2018.py)
  python tools/train_net.py --config mask_rcnn_sharp_R101.yaml
  # any JSON the converter wrote (it records the folder of its images)
  python tools/train_net.py --config mask_rcnn_plain_R50.yaml --train-json ann/train.json --test-json ann/val.json
  # 2 GPUs, or 2 CPU processes; continue after a crash or a kill
  python tools/train_net.py --config mask_rcnn_sharp_R50 --num-gpus 2
  python tools/train_net.py --config mask_rcnn_sharp_R50 --resume
  # 2 machines, 1 process each: this line on machine 0 (at HOST), --machine-rank 1 on the other
  python tools/train_net.py --config mask_rcnn_sharp_R50 --num-machines 2 --machine-rank 0 --dist-url tcp://HOST:29500
  # processes started by torchrun or SLURM's srun (ranks from the environment; docs/many_machines.md)
  torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 --master-addr HOST tools/train_net.py --config ... --dist-url env://
  srun python tools/train_net.py --config mask_rcnn_sharp_R50 --dist-url env://
  # evaluate trained weights; the UNet family
  python tools/train_net.py --config mask_rcnn_sharp_R50 --eval-only MODEL.WEIGHTS output/mask_rcnn_sharp_R50/model_final.pth
  python tools/train_net.py --config unet_sharp_ds.yaml DATASETS.DSB2018_SEMANTIC.ROOT STAGE_DIR

The terminal shows the config, the model, the data, then progress at least once a minute;
OUTPUT_DIR/log.txt holds every detail. In a distributed run only rank 0 prints and writes
checkpoints and metrics; the other processes log to log.txt.rankN. A mistake in the config, the
data or the weights is one line and exit status 2; a training that diverges, or a distributed
run that loses one of its processes, stops with one line and exit status 1."""


def setup(args, cfg):
    """What each process needs besides the checked config: datasets, logs, threads."""
    cfg = cfg.clone()
    register_json_datasets(cfg, args.train_json, args.test_json, args.image_root,
                           train_image_root=args.train_image_root, test_image_root=args.test_image_root)
    cfg.freeze()
    setup_logging(cfg.OUTPUT_DIR)
    default_setup(cfg, args)  # environment, command line and full config: to log.txt only
    set_cpu_threads(cfg)
    overrides = f" {' '.join(args.opts)}" if args.opts else ""
    logger.info("config %s%s; output in %s (every detail in its log.txt)", args.config_file, overrides, cfg.OUTPUT_DIR)
    return cfg


def main(args, cfg):
    cfg = setup(args, cfg)
    trainer_cls = trainer_class(cfg)  # Mask R-CNN, or the UNet family (configs/unet_*.yaml)
    if args.eval_only:
        model = load_model_for_eval(cfg)
        results = trainer_cls.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        logger.info("evaluation in %s", os.path.join(cfg.OUTPUT_DIR, "inference"))
        return results
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    logger.info("weights %s; evaluation in %s", os.path.join(cfg.OUTPUT_DIR, "model_final.pth"),
                os.path.join(cfg.OUTPUT_DIR, "inference"))
    return results


def prepare(args):
    """The config, with it and the data and weights it names checked once, before any process
    starts: a mistake is then one line, where inside ``launch`` it is a traceback per process."""
    flags = [word for word in args.opts if word.startswith("--")]
    if flags:  # argparse hands everything after the first KEY to the overrides
        raise SetupError(f"{flags[0]} comes after the KEY VALUE overrides; give the flags first")
    cfg = load_config(args.config or args.config_file, args.opts)
    args.config_file = str(resolve_config_path(args.config or args.config_file))
    register_json_datasets(cfg, args.train_json, args.test_json, args.image_root,
                           train_image_root=args.train_image_root, test_image_root=args.test_image_root)
    check_run(cfg, eval_only=args.eval_only, resume=args.resume)
    return cfg


def parser():
    p = default_argument_parser(epilog=EXAMPLES)
    p.description = __doc__
    p.add_argument("--config", default="", metavar="NAME",
                   help="a shipped config by file name (e.g. mask_rcnn_sharp_R101.yaml, .yaml optional) or any path")
    p.add_argument("--train-json", help="train on this converted COCO JSON instead of DATASETS.TRAIN")
    p.add_argument("--test-json", help="evaluate on this converted COCO JSON instead of DATASETS.TEST")
    p.add_argument("--image-root", help="folder the JSONs' file_name are relative to (default: the folder "
                   "prepare_dsb2018.py recorded in each JSON, its STAGE_DIR; else the JSON's folder)")
    p.add_argument("--train-image-root", help="the same for --train-json alone (default: --image-root)")
    p.add_argument("--test-image-root", help="the same for --test-json alone (default: --image-root)")
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT.total_seconds(), metavar="SECONDS",
                   help="how long a process of a distributed run waits for the others before it stops with an "
                   "error (default: %(default)d, Detectron2's)")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def from_launcher(args):
    """Whether torchrun or srun started this process (``--dist-url env://``; torchrun's own
    variables imply it), rather than Detectron2's ``launch`` starting ours."""
    return args.dist_url.startswith("env://") or {"RANK", "WORLD_SIZE", "LOCAL_RANK"} <= set(os.environ)


def run(args, cfg):
    """Start this machine's processes as Detectron2's ``launch`` does, or join a run as one
    process: one that torchrun or srun started (env://), or the only one of its machine.
    Joining goes through Detectron2's own worker set-up, without spawning a child for it."""
    timeout = timedelta(seconds=args.dist_timeout)
    if cfg.MODEL.DEVICE == "cpu":  # Detectron2 picks NCCL whenever it sees a GPU; a CPU run needs gloo
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if from_launcher(args):
        if (args.num_gpus, args.num_machines, args.machine_rank) != (1, 1, 0):
            raise SetupError("with torchrun or srun (env://) the launcher starts the processes: leave out --num-gpus, "
                             "--num-machines and --machine-rank")
        ranks = launcher_ranks()
        os.environ.setdefault("MASTER_PORT", "29500")
        dist_url = "env://"
    elif args.num_gpus == 1 and args.num_machines > 1:
        if args.dist_url == "auto":
            raise SetupError("--dist-url auto picks a port on one machine; give machine 0's tcp://HOST:PORT")
        ranks = LauncherRanks(args.machine_rank, args.num_machines, 0, 1)
        dist_url = args.dist_url
    else:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args, cfg), timeout=timeout)
        return
    if ranks.world_size == 1:
        main(args, cfg)
    else:
        _distributed_worker(ranks.local_rank, main, ranks.world_size, ranks.local_world_size, ranks.machine_rank,
                            dist_url, (args, cfg), timeout)


def failure(error):
    """One line for a distributed run that lost a process: the first sentence of the last line
    of its error (a spawned process's error arrives as its traceback's text)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = (lines[-1] if lines else type(error).__name__).split(". ")[0]
    last = re.sub(r"^\[\S+:\d+\] ", "", last)  # gloo's source file and line
    if isinstance(error, ProcessExitedException):
        return f"a process of this machine was stopped ({last}); the run stops"
    if any(word in last for word in ("Connection closed", "Connection reset", "timed out", "Timed out", "Broken pipe")):
        return (f"lost contact with another process of the distributed run ({last}); it stopped or its machine "
                "is unreachable, and its own log (log.txt.rankN) says why")
    return f"a process of the distributed run stopped: {last}"


def cli(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if not (args.config or args.config_file):
        p.error("give --config NAME or --config-file PATH")
    try:
        cfg = prepare(args)
        run(args, cfg)
    except (SetupError, DatasetError, FileNotFoundError) as e:
        if args.verbose:
            raise
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except FloatingPointError as e:
        if args.verbose:
            raise
        first = str(e).splitlines()[0]
        sys.exit(f"error: training stopped, it diverged: {first} Lower SOLVER.BASE_LR or raise SOLVER.WARMUP_ITERS; "
                 "with random weights use GN/BN, not FrozenBN. Resume from the last checkpoint with --resume.")
    except (ProcessException, RuntimeError) as e:
        if args.verbose or not (isinstance(e, ProcessException) or dist.is_initialized()):
            raise
        sys.exit(f"error: {failure(e)}")
    except (ValueError, KeyError) as e:
        if args.verbose:
            raise
        logging.getLogger("detectron2").debug("error", exc_info=True)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli()
