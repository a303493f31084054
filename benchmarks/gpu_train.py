#!/usr/bin/env python
"""One run of the prepared GPU window (scripts/gpu_run.sh): train until a wall-clock deadline,
evaluate, keep the per-image records and, if asked, the weights in the shipped form.

    python benchmarks/gpu_train.py --name plain_seed0 --config mask_rcnn_sharp_R101.yaml --neck plain \
        --seed 0 --train-json data/train.json --val-json data/val.json --input-from nuclei_R18_cpu.yaml \
        --deadline EPOCH_S --plan-at EPOCH_S --plan-dir work/a/plan --plan-runs 6 \
        --output-dir work/a/plain_seed0 --device cuda SOLVER.IMS_PER_BATCH 8 SOLVER.AMP.ENABLED True

Several runs share one GPU and one deadline, so no iteration count can be fixed beforehand.
Each run trains at its config's learning rate, after SOLVER.WARMUP_ITERS, until --plan-at;
there it measures its own iterations per second, writes how many iterations fit before
--deadline into --plan-dir, waits (at most --plan-wait-s) for the other --plan-runs runs, and
every run adopts the smallest count, so that the runs compared with each other train for the
same number of iterations. The learning-rate drops then go to 75% and 92% of that count, as in
compare_necks.py. A run still training at --deadline stops there (and says so). --max-iter caps
the count (the CPU dry run trains 2 iterations).

Then the model is evaluated on --val-json as every run of this project is: the evaluator's
metrics.json, with its per-image records, goes to OUTPUT_DIR/inference/<dataset>/ (what
benchmarks/by_image.py pairs), and one row in compare_necks.py's form, with the iterations,
the time and the peak GPU memory, to OUTPUT_DIR/compare_necks.json (compare_necks.py --collect
merges such files). --export NAME also writes NAME.pth (the state dict in float16) and NAME.yaml,
as tools/export_model.py does. Without --output-dir's row the run failed; its log.txt says why.
"""
import argparse
import ctypes
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from detectron2.engine import HookBase, hooks
from detectron2.solver import build_lr_scheduler
from detectron2.utils.env import seed_all_rng

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (also puts the repository on the path)
import compare_necks  # noqa: E402
from sharp_fpn import get_sharp_cfg  # noqa: E402
from sharp_fpn.config import check_config  # noqa: E402
from sharp_fpn.engine import Trainer, register_json_datasets, setup_logging  # noqa: E402
from sharp_fpn.predict.pretrained import export_model  # noqa: E402

SAFETY = 0.95  # share of the time left at the plan that the planned iterations fill
logger = logging.getLogger("sharp_fpn.gpu_train")


def cuda_runtime():
    """The CUDA runtime that torch loaded, through ctypes (None without one)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libcudart.so" in line:
            return ctypes.CDLL(line.split()[-1])
    return None


def blocking_sync(runtime) -> None:
    """Let this process sleep, not spin, while it waits for the GPU. CUDA spins by default when a
    process holds fewer contexts than the host has cores, so eight training processes would keep
    eight of the host's 16 cores busy waiting, cores that their data loaders need. The flag must
    reach the device's context before its first allocation: set before and after torch's CUDA
    start; :func:`device_flags` says afterwards whether it took."""
    runtime.cudaSetDeviceFlags(4)  # cudaDeviceScheduleBlockingSync
    torch.cuda.init()
    runtime.cudaSetDeviceFlags(4)


def device_flags(runtime) -> str:
    flags = ctypes.c_uint()
    runtime.cudaGetDeviceFlags(ctypes.byref(flags))
    return hex(flags.value)  # 0x4 set: blocking sync; 0x1 or 0x0: spinning


class TimeUp(Exception):
    """Raised by :class:`TimeBox` to end the training loop; caught by :func:`train`."""


def write_json_atomic(path: Path, payload: dict) -> None:
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_text(json.dumps(payload))
    partial.replace(path)


def agree(plan_dir: Path, name: str, fit: int, runs: int, wait_s: float) -> dict:
    """Write this run's fit, wait for ``runs`` fits (or ``wait_s``), and return the one plan
    that every run reads: the first run to get there writes plan.json (created once, whole),
    so a run that arrives late adopts it too. A run that failed before its plan writes
    --max-iter as its fit, so that the others need not wait for it."""
    plan_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_dir / f"{name}.fit.json", {"fit": fit})
    plan = plan_dir / "plan.json"
    end = time.time() + wait_s
    while not plan.exists() and len(list(plan_dir.glob("*.fit.json"))) < runs and time.time() < end:
        time.sleep(0.2)
    if not plan.exists():
        entries = {p.name[:-len(".fit.json")]: json.loads(p.read_text()) for p in plan_dir.glob("*.fit.json")}
        fits = {name: entry["fit"] for name, entry in entries.items()}
        failed = sorted(name for name, entry in entries.items() if entry.get("failed"))
        draft = plan_dir / f"plan.json.{os.getpid()}.partial"
        draft.write_text(json.dumps({"iterations": min(fits.values()), "fits": fits, "failed": failed}))
        try:
            os.link(draft, plan)  # atomic, and fails if another run wrote the plan first
        except FileExistsError:
            pass
        draft.unlink()
    return json.loads(plan.read_text())


class TimeBox(HookBase):
    """Plans the run's length at ``plan_at`` (see the module's docstring) and stops it at the
    planned iteration or at ``deadline``, whichever comes first."""

    def __init__(self, args):
        self.args = args
        self.planned = None  # iterations, once agreed
        self.stopped_by = None
        self.plan = None
        self.steps = []  # the learning-rate drops of the plan
        self._start = None  # (iteration, time) at the end of the first step, which carries the warm-up

    def after_step(self):
        now, done = time.time(), self.trainer.iter + 1
        if self._start is None:
            self._start = (done, now)
        elif self.planned is None and now >= self.args.plan_at:
            rate = (done - self._start[0]) / (now - self._start[1])
            fit = done + int(SAFETY * rate * max(0.0, self.args.deadline - now))
            self.plan = agree(Path(self.args.plan_dir), self.args.name, min(fit, self.args.max_iter),
                              self.args.plan_runs, self.args.plan_wait_s)
            self.plan.update(at_iteration=done, iterations_per_s=round(rate, 3), own_fit=fit)
            self.planned = max(done, self.plan["iterations"])
            self._refit_schedule()
            logger.info("plan at iteration %d (%.2f it/s): %d fit before the deadline, %d agreed %s; "
                        "learning-rate drops at %s", done, rate, fit, self.planned, self.plan["fits"], self.steps)
        if self.planned is not None and done >= self.planned:
            self.stopped_by = "plan"
        elif now >= self.args.deadline:
            self.stopped_by = "deadline"
        elif done >= self.args.max_iter:
            self.stopped_by = "max_iter"
        if self.stopped_by:
            logger.info("training stops after %d iterations (%s)", done, self.stopped_by)
            raise TimeUp

    def _refit_schedule(self):
        """The config's warm-up, then drops at 75% and 92% of the planned iterations (those
        not yet passed), continuing from the current iteration."""
        cfg = self.trainer.cfg.clone()
        cfg.defrost()
        cfg.SOLVER.MAX_ITER = self.planned
        cfg.SOLVER.STEPS = tuple(s for s in sorted({int(self.planned * f) for f in (0.75, 0.92)})
                                 if self.trainer.iter < s < self.planned)
        scheduler = build_lr_scheduler(cfg, self.trainer.optimizer)
        scheduler.last_epoch = self.trainer.iter
        with warnings.catch_warnings():  # torch's "step() before optimizer.step()": a new scheduler
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()  # the learning rate of the next iteration
        self.trainer.scheduler = scheduler  # Detectron2's LRScheduler hook reads it from the trainer
        self.steps = list(cfg.SOLVER.STEPS)


class NoCheckpoints(compare_necks.TrainOnly):
    """compare_necks.py's trainer (no evaluation hook), without periodic checkpoints."""

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.PeriodicCheckpointer)]


class _HideTimeUp(logging.Filter):
    """Detectron2 logs every exception that ends training with its traceback; ours is no error."""

    def filter(self, record):
        return not (record.exc_info and isinstance(record.exc_info[1], TimeUp))


def build_cfg(args):
    cfg = get_sharp_cfg(args.config, ["MODEL.DEVICE", args.device])
    if args.input_from:  # the recipe's input pipeline: scale rule, crops, symmetries, intensity
        cfg.INPUT = get_sharp_cfg(args.input_from).INPUT.clone()
    cfg.merge_from_list(["OUTPUT_DIR", args.output_dir, "SEED", str(args.seed), *args.opts,
                         *(compare_necks.neck_opts(args.neck) if args.neck else [])])
    cfg.SOLVER.MAX_ITER = args.max_iter + 1  # the TimeBox ends the loop before
    cfg.SOLVER.STEPS = ()  # until the plan
    cfg.TEST.EVAL_PERIOD = 0
    check_config(cfg)
    register_json_datasets(cfg, args.train_json, args.val_json, args.image_root)
    return cfg


def peak_gib(cuda: bool) -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None


def train(args) -> dict:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = build_cfg(args)
    cfg.freeze()
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    runtime = cuda_runtime() if cuda else None
    if runtime:
        blocking_sync(runtime)
    if cuda and args.memory_fraction:  # a run over its share fails alone, not its neighbours
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction)
    setup_logging(str(out))
    logging.getLogger("detectron2.engine.train_loop").addFilter(_HideTimeUp())
    (out / "config.yaml").write_text(cfg.dump())
    seed_all_rng(args.seed)
    torch.backends.cudnn.benchmark = cuda  # fixed-size crops: autotune once
    trainer = NoCheckpoints(cfg)
    box = TimeBox(args)
    trainer.register_hooks([box])
    started = time.perf_counter()
    try:
        trainer.train()
    except TimeUp:
        pass
    train_seconds = time.perf_counter() - started
    iterations = trainer.iter + 1
    train_peak = peak_gib(cuda)
    if cuda:
        torch.backends.cudnn.benchmark = False  # every val image has its own size
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    results = Trainer.test(cfg, trainer.model)
    row = {f"{task}/{key}": float(results[task][key]) for task, key in compare_necks.COLUMNS}
    plain = cfg.MODEL.SHARP_FPN.SCHEME == "plain"
    row.update(name=args.name, scheme=args.neck or cfg.MODEL.SHARP_FPN.SCHEME,
               conv="-" if plain else cfg.MODEL.SHARP_FPN.CONV, seed=args.seed, iterations=iterations,
               images=iterations * cfg.SOLVER.IMS_PER_BATCH, stopped_by=box.stopped_by, plan=box.plan,
               lr_steps=box.steps, train_seconds=round(train_seconds, 1),
               eval_seconds=round(time.perf_counter() - started, 1), peak_train_gib=train_peak,
               peak_eval_gib=peak_gib(cuda), cuda_device_flags=device_flags(runtime) if runtime else None,
               params_M=round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2))
    if args.export:
        final = cfg.clone()
        final.defrost()
        final.SOLVER.MAX_ITER, final.SOLVER.STEPS = iterations, tuple(row["lr_steps"])
        (out / "config.yaml").write_text(final.dump())  # the config the weights were trained with
        checkpoint = out / "model_final.pth"
        torch.save({"model": trainer.model.state_dict()}, checkpoint)
        exported = export_model(checkpoint, out, args.export)
        checkpoint.unlink()  # only the float16 export travels
        row.update(export=exported.weights.name, export_mb=round(exported.num_bytes / 2**20, 1),
                   export_sha256=exported.sha256)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="the run's name (its plan entry, its row)")
    p.add_argument("--config", required=True, help="yaml in configs/ (or a path)")
    p.add_argument("--neck", help="compare_necks.py's SCHEME[:KEY=VALUE,...] (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-from", help="take the whole INPUT node of this config (the recipe's data settings)")
    p.add_argument("--train-json", required=True)
    p.add_argument("--val-json", required=True)
    p.add_argument("--image-root", help="folder the JSONs' file_name are relative to (default: as recorded)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--deadline", type=float, required=True, help="Unix time at which training stops")
    p.add_argument("--plan-at", type=float, required=True, help="Unix time at which the run plans its length")
    p.add_argument("--plan-dir", required=True, help="folder shared by the runs that agree on one length")
    p.add_argument("--plan-runs", type=int, default=1, help="how many runs agree (default: %(default)s)")
    p.add_argument("--plan-wait-s", type=float, default=15,
                   help="longest wait for the others' fits (default: %(default)s)")
    p.add_argument("--max-iter", type=int, default=100000, help="most iterations (default: %(default)s)")
    p.add_argument("--memory-fraction", type=float, help="this process's share of the GPU's memory")
    p.add_argument("--export", metavar="NAME", help="also write NAME.pth (float16) and NAME.yaml")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    try:
        row = train(args)
    except BaseException:  # the other runs need not wait for this one's fit: it sets no limit
        plan_dir = Path(args.plan_dir)
        if not (plan_dir / "plan.json").exists():
            plan_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(plan_dir / f"{args.name}.fit.json", {"fit": args.max_iter, "failed": True})
        raise
    header = (f"Device: {compare_necks.device_name(args.device)}; config {args.config}"
              + (f" with the INPUT of {args.input_from}" if args.input_from else "")
              + f"; time-boxed (benchmarks/gpu_train.py); overrides {' '.join(args.opts) or 'none'}; "
              f"torch {torch.__version__}")
    payload = {"header": header, "rows": [row], "machine": common.machine_info(args.device)}
    common.write_outputs(args.output_dir, "compare_necks", payload, compare_necks.markdown([row], header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
