#!/usr/bin/env python
"""COCO segm evaluation speed: pycocotools against faster-coco-eval, and whether they agree.

    python benchmarks/evaluator_speed.py --images 600 --detections 500

Builds a synthetic result set (elliptical nuclei as RLEs; see synthetic_results.py), then runs
COCOeval segm with maxDets [1, 100, 500] in each library, timing loadRes, evaluate, accumulate
and summarize, and compares the 12 summary numbers and the whole precision array. The two
libraries run in alternation, --repeats times each. Writes evaluator_speed.json and .md.
"""
import argparse
import contextlib
import copy
import io
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_results import coco_dataset, make_result_set  # noqa: E402

MAX_DETS = [1, 100, 500]
STEPS = ("load", "evaluate", "accumulate", "summarize")


def run_pycocotools(dataset, detections):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    times = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        t = time.perf_counter()
        dt = gt.loadRes(copy.deepcopy(detections))
        times["load"] = time.perf_counter() - t
        ev = COCOeval(gt, dt, "segm")
        ev.params.maxDets = MAX_DETS
        for step in STEPS[1:]:
            t = time.perf_counter()
            getattr(ev, step)()
            times[step] = time.perf_counter() - t
    return times, np.asarray(ev.stats), np.asarray(ev.eval["precision"])


def run_faster(dataset, detections):
    from faster_coco_eval import COCO, COCOeval_faster

    times = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(copy.deepcopy(dataset))
        t = time.perf_counter()
        dt = gt.loadRes(copy.deepcopy(detections))
        times["load"] = time.perf_counter() - t
        ev = COCOeval_faster(gt, dt, "segm", print_function=lambda *a, **k: None)
        ev.params.maxDets = MAX_DETS
        for step in STEPS[1:]:
            t = time.perf_counter()
            getattr(ev, step)()
            times[step] = time.perf_counter() - t
    return times, np.asarray(ev.stats[:12]), np.asarray(ev.eval["precision"])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=600, help="images in the result set (default 600)")
    p.add_argument("--detections", type=int, default=500, help="detections per image (default 500)")
    p.add_argument("--size", type=int, default=512, help="image side (default 512)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each library, alternating (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="where evaluator_speed.json and .md go (default benchmarks/results)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import common

    info = common.machine_info()
    t = time.perf_counter()
    result_set = make_result_set(args.images, args.detections, args.size, seed=args.seed)
    build_s = time.perf_counter() - t
    dataset, detections = coco_dataset(result_set), result_set["detections"]
    common.log(f"{args.images} images, {len(result_set['annotations'])} nuclei, {len(detections)} detections "
               f"built in {build_s:.1f}s")
    runners = {"pycocotools": run_pycocotools, "faster-coco-eval": run_faster}
    times = {name: [] for name in runners}
    outputs = {}
    for r in range(args.repeats):
        for name, run in runners.items():
            step_times, stats, precision = run(dataset, detections)
            times[name].append(step_times)
            outputs[name] = (stats, precision)
            common.log(f"  {name} run {r + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in step_times.items()))
    (s0, p0), (s1, p1) = outputs["pycocotools"], outputs["faster-coco-eval"]
    agree = {"max_abs_diff_stats": float(np.max(np.abs(s0 - s1))),
             "max_abs_diff_precision": float(np.max(np.abs(p0 - p1))), "stats_pycocotools": s0.tolist(),
             "stats_faster_coco_eval": s1.tolist()}
    summary = {}
    for name, runs in times.items():
        summary[name] = {step: statistics.median(r[step] for r in runs) for step in STEPS}
        summary[name]["total"] = statistics.median(sum(r.values()) for r in runs)
    ratio = summary["pycocotools"]["total"] / summary["faster-coco-eval"]["total"]
    headers = ["library", *(f"{s} (s)" for s in STEPS), "total (s)", "images/s", "speed-up"]
    rows = []
    for name, s in summary.items():
        rows.append([name, *(f"{s[k]:.2f}" for k in STEPS), f"{s['total']:.2f}", f"{args.images / s['total']:.1f}",
                     f"{summary['pycocotools']['total'] / s['total']:.1f}x"])
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR100", "AR500", "ARs", "ARm", "ARl"]
    stats_rows = [[n, f"{a:.4f}", f"{b:.4f}"] for n, a, b in zip(names, s0, s1)]
    md = "\n".join([
        common.header("Evaluator: pycocotools vs faster-coco-eval (segm)", info),
        f"{args.images} synthetic {args.size}x{args.size} images, {len(result_set['annotations'])} nuclei "
        f"(log-normal per image, median 27, at most 375), {args.detections} detections per image "
        f"({len(detections)} in all); maxDets {MAX_DETS}; median of {args.repeats} run(s) each.\n",
        common.markdown_table(headers, rows) + "\n",
        f"faster-coco-eval is {ratio:.1f}x faster in total. Largest difference: {agree['max_abs_diff_stats']:.2e} "
        f"over the 12 summary numbers, {agree['max_abs_diff_precision']:.2e} over the precision array.\n",
        common.markdown_table(["stat", "pycocotools", "faster-coco-eval"], stats_rows) + "\n",
        "The summaries read the same precision and recall arrays, but pycocotools' summarize() takes AP "
        "(the first number) at maxDets=100 whatever maxDets says, and faster-coco-eval at the largest "
        "maxDets (500 here); the other numbers use the same maxDets in both.\n",
    ])
    print(md)
    payload = {"args": vars(args), "machine": info, "times_s": times, "median_s": summary, "speedup": ratio,
               "agreement": agree, "n_annotations": len(result_set["annotations"]), "build_s": build_s}
    common.write_outputs(args.output_dir, "evaluator_speed", payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
