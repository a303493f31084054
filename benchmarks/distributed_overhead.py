#!/usr/bin/env python
"""What distributed training costs on one machine: 1 rank against 2 gloo ranks of one torch
thread each, at the same total batch. Not a scaling claim; it shows the overhead.

    python benchmarks/distributed_overhead.py [--config nuclei_R18_cpu] [--size 256] [--batch 4] [--iterations 20]

Each row trains the config's Mask R-CNN from random weights on fixed synthetic batches (no data
loading), SGD steps of forward, backward and update, and reports iterations per second of the
whole job (``--batch`` images per iteration in all). The 2-rank row runs Detectron2's own
``launch`` and DDP over gloo on 127.0.0.1, each rank with batch/2 images; its communication
share is the part of an iteration that gradient exchange adds: the same rank's iterations
without it (DDP's ``no_sync``), interleaved with the normal ones, take 1 - share of their time.
Writes distributed_overhead.json and .md.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from detectron2.engine import launch  # noqa: E402
from detectron2.engine.defaults import create_ddp_model  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from sharp_fpn import get_sharp_cfg  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="nuclei_R18_cpu", help="model to train (default: %(default)s, the CPU recipe)")
    p.add_argument("--size", type=int, default=256, help="image side, the recipe's crop (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="images per iteration in all ranks together (default: %(default)s)")
    p.add_argument("--objects", type=int, default=30, help="nuclei per synthetic image (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=20, help="timed iterations per row (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: %(default)s)")
    p.add_argument("--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="where the outputs go (default benchmarks/results)")
    return p.parse_args(argv)


def train_rank(args, threads, result_file):
    """Time ``args.iterations`` steps in this process (one rank of the job); rank 0 writes the
    per-iteration seconds, with and without gradient exchange, to ``result_file``."""
    common.quiet()
    torch.set_num_threads(threads)
    world, rank = comm.get_world_size(), comm.get_rank()
    cfg = get_sharp_cfg(args.config, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = create_ddp_model(build_model(cfg).train(), broadcast_buffers=False, device_ids=None)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    batch = common.training_batch(args.batch // world, args.size, args.objects, seed=rank)

    def step(exchange=True):
        started = time.perf_counter()
        optimizer.zero_grad()
        with model.no_sync() if not exchange else torch.enable_grad():
            sum(model(batch).values()).backward()
        optimizer.step()
        return time.perf_counter() - started

    times = {"exchange": [], "no_exchange": []}
    with EventStorage(0):  # the model logs its training statistics there
        for _ in range(args.warmup):
            step()
        for i in range(args.iterations):
            times["exchange"].append(step())
            if world > 1:
                times["no_exchange"].append(step(exchange=False))
            if rank == 0:
                common.log(f"  {world} rank(s) x {threads} thread(s): iteration {i + 1}/{args.iterations} "
                           f"{times['exchange'][-1]:.2f} s")
    comm.synchronize()
    if rank == 0:
        with open(result_file, "w") as f:
            json.dump(times, f)


def row(args, ranks, threads):
    with tempfile.TemporaryDirectory() as folder:
        result_file = os.path.join(folder, "times.json")
        if ranks == 1:
            train_rank(args, threads, result_file)
        else:
            launch(train_rank, ranks, dist_url="auto", args=(args, threads, result_file))
        with open(result_file) as f:
            times = json.load(f)
    median = statistics.median(times["exchange"])
    found = {"ranks": ranks, "threads_per_rank": threads, "images_per_rank": args.batch // ranks,
             "iterations_per_s": 1 / median, "median_s": median, "times_s": times["exchange"]}
    if times["no_exchange"]:
        compute = statistics.median(times["no_exchange"])
        found.update(communication_share=1 - compute / median, median_without_exchange_s=compute,
                     times_without_exchange_s=times["no_exchange"])
    return found


def main(argv=None):
    args = parse_args(argv)
    if args.batch % 2:
        raise SystemExit(f"error: --batch {args.batch}: give an even total batch, split over 2 ranks")
    common.quiet()
    cores = os.cpu_count() or 1
    info = common.machine_info()
    setups = [(1, 1), (1, min(2, cores)), (2, 1)] if cores > 1 else [(1, 1), (2, 1)]
    rows = []
    for ranks, threads in dict.fromkeys(setups):
        common.log(f"{ranks} rank(s) x {threads} thread(s), {args.batch} images of {args.size} px per iteration")
        rows.append(row(args, ranks, threads))
    baseline = rows[0]["iterations_per_s"]
    table = common.markdown_table(
        ["ranks x threads", "images per rank", "iterations / s", "vs 1 rank x 1 thread", "communication share"],
        [[f"{r['ranks']} x {r['threads_per_rank']}", r["images_per_rank"], f"{r['iterations_per_s']:.3f}",
          f"{r['iterations_per_s'] / baseline:.2f}",
          f"{100 * r['communication_share']:.1f}%" if "communication_share" in r else "-"] for r in rows])
    markdown = "\n".join([
        common.header("Distributed training overhead on one machine (gloo)", info),
        f"{args.config}, {args.batch} synthetic images of {args.size} px with {args.objects} nuclei per iteration "
        f"in all; median of {args.iterations} iterations after {args.warmup} untimed. Communication share: the "
        "part of a 2-rank iteration that gradient exchange adds (its iterations without it, interleaved).",
        "", table])
    print(markdown)
    common.write_outputs(args.output_dir, "distributed_overhead", {"info": info, "args": vars(args), "rows": rows},
                         markdown)


if __name__ == "__main__":
    main()
