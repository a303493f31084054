#!/usr/bin/env python
"""Train several necks with identical settings on converted Dsb2018 data and compare them.

    # CPU, a narrow R-18 at small scale (fits ~25 min per neck on 2 cores):
    python benchmarks/compare_necks.py --train-json ann/train.json --val-json ann/val.json \
        --image-root STAGE_DIR --config demo_sharp_R18_cpu.yaml --max-iter 1000 --output-dir out/cpu
    # GPU, the paper's R-101 necks:
    python benchmarks/compare_necks.py ... --config mask_rcnn_sharp_R101.yaml --device cuda \
        --max-iter 600 SOLVER.IMS_PER_BATCH 8 SOLVER.AMP.ENABLED True

A neck is a scheme name, optionally with MODEL.SHARP_FPN keys after a colon, e.g.
``sharp:CONV=pw_dw`` or ``sharp:CONV=pw_dw,NODE_CHANNELS=128,BRANCH_CHANNELS=32``; only those keys
(and the seed) differ between runs. One seed says little: differences of a point are within
seed noise at these budgets, so give several with --seeds, or run seeds as separate processes
and merge them with --collect. Prints a markdown table (DSB score, segm AP, AP50, foreground
pixel IoU/Dice, F1, train time; mean and s.d. over seeds; each neck's difference from plain
paired by seed, with a t interval, once they share two seeds) and writes compare_necks.json and
compare_necks.md; the device is named in both.
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from detectron2.engine import hooks
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from scipy import stats

import common
from sharp_fpn import get_sharp_cfg
from sharp_fpn.engine import Trainer, register_json_datasets, set_cpu_threads

COLUMNS = (("nuclei", "dsb_score"), ("segm", "AP"), ("segm", "AP50"), ("bbox", "AP"),
           ("nuclei", "fg_iou"), ("nuclei", "fg_dice"), ("nuclei", "f1@0.5"))


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


class TrainOnly(Trainer):
    """Training without DefaultTrainer's evaluation at the end, so that the train time is
    training alone and the model is evaluated once, by the caller."""

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]


def neck_opts(neck: str) -> list:
    """``"sharp:CONV=pw_dw,NODE_CHANNELS=128"`` -> the KEY VALUE list of MODEL.SHARP_FPN overrides."""
    scheme, _, extra = neck.partition(":")
    opts = ["MODEL.SHARP_FPN.SCHEME", scheme]
    for item in filter(None, extra.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"error: neck {neck!r}: expected KEY=VALUE after ':', got {item!r}")
        opts += [f"MODEL.SHARP_FPN.{key.strip()}", value.strip()]
    return opts


def run_dir(output_dir, neck: str, seed: int) -> Path:
    return Path(output_dir) / neck.replace(":", "_").replace(",", "_").replace("=", "-") / f"seed{seed}"


def train_and_evaluate(args, neck: str, seed: int) -> dict:
    out = run_dir(args.output_dir, neck, seed)
    cfg = get_sharp_cfg(args.config, ["MODEL.DEVICE", args.device, "OUTPUT_DIR", str(out),
                                      "SOLVER.MAX_ITER", str(args.max_iter), "SEED", str(seed),
                                      *args.opts, *neck_opts(neck)])
    cfg.SOLVER.STEPS = tuple(sorted({max(1, int(args.max_iter * f)) for f in (0.75, 0.92)} - {args.max_iter}))
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, args.max_iter // 2)
    cfg.SOLVER.CHECKPOINT_PERIOD = min(args.max_iter, 500)  # for --resume after a cut-off run
    cfg.TEST.EVAL_PERIOD = 0
    register_json_datasets(cfg, args.train_json, args.val_json, args.image_root)
    cfg.freeze()
    set_cpu_threads(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.dump())
    seed_all_rng(seed)
    trainer = TrainOnly(cfg)
    trainer.resume_or_load(resume=args.resume)
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    results = Trainer.test(cfg, trainer.model)
    row = {f"{task}/{key}": float(results[task][key]) for task, key in COLUMNS}
    plain = cfg.MODEL.SHARP_FPN.SCHEME == "plain"  # FPN's top-down adds have no node convs
    row.update(scheme=neck, conv="-" if plain else cfg.MODEL.SHARP_FPN.CONV, seed=seed,
               train_seconds=round(train_seconds, 1),
               params_M=round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2))
    return row


def neck_key(row: dict) -> tuple:
    """Runs of one neck: same spec and conv form (a spec without CONV follows the default)."""
    return row["scheme"], row["conv"]


def _metric(key: str, value: float) -> str:
    return f"{value:.4f}" if key.startswith("nuclei") else f"{value:.2f}"


def _signed(key: str, value: float) -> str:
    return ("+" if value >= 0 else "") + _metric(key, value)


def markdown(rows, header: str) -> str:
    """One line per run; with several seeds of a neck, then its mean and sample s.d. over them."""
    keys = [f"{t}/{k}" for t, k in COLUMNS]
    parts = [header, "", common.markdown_table(
        ["neck", "conv", "seed", "params (M)", "train time (s)", *keys],
        [[r["scheme"], r["conv"], r["seed"], r["params_M"], f"{r['train_seconds']:.0f}", *(_metric(k, r[k]) for k in keys)]
         for r in rows])]
    necks = list(dict.fromkeys(map(neck_key, rows)))
    if all(sum(neck_key(r) == n for r in rows) < 2 for n in necks):
        return "\n".join(parts)
    means = []
    for neck in necks:
        runs = [r for r in rows if neck_key(r) == neck]
        cells = []
        for k in keys:
            values = [r[k] for r in runs]
            sd = f" ± {_metric(k, statistics.stdev(values))}" if len(values) > 1 else ""
            cells.append(_metric(k, statistics.mean(values)) + sd)
        means.append([*neck, len(runs), *cells])
    parts += ["", "Mean over seeds (sample standard deviation):", "",
              common.markdown_table(["neck", "conv", "seeds", *keys], means)]
    return "\n".join(parts + paired_by_seed(rows, keys))


def paired_by_seed(rows, keys, reference=("plain", "-")) -> list:
    """A table, as lines to append: each neck minus the reference neck, seed by seed, as the mean
    difference with a Student-t 95% interval over the seeds both have. One seed gives both runs
    the same data order and backbone initialisation, so pairing cancels that part of the seed noise."""
    by_seed = {r["seed"]: r for r in rows if neck_key(r) == reference}
    table = []
    for neck in dict.fromkeys(map(neck_key, rows)):
        pairs = [(r, by_seed[r["seed"]]) for r in rows if neck_key(r) == neck and r["seed"] in by_seed]
        if neck == reference or len(pairs) < 2:
            continue
        cells = []
        for k in keys:
            diffs = [a[k] - b[k] for a, b in pairs]
            mean = statistics.mean(diffs)
            half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
            cells.append(f"{_signed(k, mean)} [{_signed(k, mean - half)}, {_signed(k, mean + half)}]")
        table.append([*neck, len(pairs), *cells])
    if not table:
        return []
    return ["", f"Paired by seed, each neck minus {reference[0]} (mean difference [Student-t 95% interval over seeds]):",
            "", common.markdown_table(["neck", "conv", "seed pairs", *keys], table)]


def read_results(path: Path) -> dict:
    try:
        part = json.loads(path.read_text())
        if not isinstance(part.get("rows"), list):
            raise ValueError("no 'rows' list")
        return part
    except (OSError, ValueError, AttributeError) as e:
        raise SystemExit(f"error: {path}: not a compare_necks.json ({e})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-json", help="converted COCO JSON to train on")
    p.add_argument("--val-json", help="converted COCO JSON to evaluate on")
    p.add_argument("--image-root", help="the STAGE_DIR the JSONs were converted from")
    p.add_argument("--config", default="demo_sharp_R18_cpu.yaml", help="base config (default: %(default)s)")
    p.add_argument("--necks", "--schemes", nargs="+", default=["plain", "sharp"],
                   help="SCHEME[:KEY=VALUE,...] per run (default: plain sharp)")
    p.add_argument("--max-iter", type=int, default=1000, help="iterations per neck (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                   help="train every neck once per seed (default: 0)")
    p.add_argument("--output-dir", default="output/compare_necks", help="(default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue each run from the last checkpoint in its folder (train time then "
                   "counts only the part after the resume)")
    p.add_argument("--collect", nargs="+", metavar="JSON",
                   help="train nothing: merge compare_necks.json files of earlier runs (e.g. seeds run "
                   "as separate processes) into one table in --output-dir")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(argv)
    if args.collect:
        parts = [read_results(Path(f)) for f in args.collect]
        header = "\n".join(dict.fromkeys(part["header"] for part in parts))
        rows = [row for part in parts for row in part["rows"]]
        order = {neck: k for k, neck in enumerate(dict.fromkeys(map(neck_key, rows)))}
        rows.sort(key=lambda r: (order[neck_key(r)], r["seed"]))
        table = markdown(rows, header)
        common.write_outputs(args.output_dir, "compare_necks", {"header": header, "rows": rows}, table)
        print(table)
        return
    missing = [f"--{name}" for name in ("train-json", "val-json", "image-root") if not getattr(args, name.replace("-", "_"))]
    if missing:
        p.error(f"{', '.join(missing)} required (or --collect)")
    setup_logger(name="detectron2")
    setup_logger(name="sharp_fpn")
    for neck in args.necks:  # a bad neck stops here, not after the first neck's training
        try:
            get_sharp_cfg(args.config, ["MODEL.DEVICE", args.device, *args.opts, *neck_opts(neck)])
        except (AssertionError, KeyError, ValueError) as e:
            raise SystemExit(f"error: neck {neck!r}: {e}")
    header = (f"Device: {device_name(args.device)}; config {args.config}; {args.max_iter} iterations per neck; "
              f"overrides {' '.join(args.opts) or 'none'}; torch {torch.__version__}")
    rows = []
    for seed in args.seeds:  # results are written after each run, so a cut-off run keeps them
        for neck in args.necks:
            rows.append(train_and_evaluate(args, neck, seed))
            table = markdown(rows, header)
            common.write_outputs(args.output_dir, "compare_necks", {"header": header, "rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
