#!/usr/bin/env python
"""Cost of each FPN neck on each bottom-up: parameters, GMAC, CPU latency, train-step time.

    python benchmarks/neck_cost.py --backbones R101 --measure params macs neck model

For every backbone and neck variant it reports the neck's parameters, the neck's GMAC at each
--sizes (fvcore counts one multiply-add as one flop, so its flops are MACs), and, interleaved
with plain FPN and given as a ratio to it: the latency of the neck alone (on stored bottom-up
features), of the whole Mask R-CNN in inference, and of one training step. Models have random
weights; the detection heads are set to return exactly --detections boxes and masks per image
so every neck gets the same head work. Writes neck_cost_<tag>.json and .md to --output-dir.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

MEASURES = ("params", "macs", "neck", "model", "train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=list(common.BACKBONES), help="R50, R101, VGG16 (default: all)")
    p.add_argument("--variants", nargs="+", default=list(common.DEFAULT_VARIANTS),
                   help="necks to compare; plain is always added (default: %(default)s; the cheaper sharp forms are "
                   + ", ".join(common.CHEAP_SHARP_VARIANTS) + ")")
    p.add_argument("--wide-match", default="sharp", help="variant whose parameter count wide_plain matches (default sharp)")
    p.add_argument("--measure", nargs="+", default=list(MEASURES), choices=MEASURES,
                   help="what to measure (default: all): params, macs, neck (neck-alone latency), model "
                   "(whole-model latency), train (train-step time)")
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 1024], help="image sides for GMAC (default 512 1024)")
    p.add_argument("--size", type=int, default=512, help="image side for the latencies (default 512)")
    p.add_argument("--detections", type=int, default=100, help="boxes and masks per image in inference (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of whole-model inference (default 3)")
    p.add_argument("--neck-repeats", type=int, default=5, help="timed rounds of neck-alone inference (default 5)")
    p.add_argument("--train-repeats", type=int, default=2, help="timed training steps per neck (default 2)")
    p.add_argument("--train-size", type=int, default=256, help="image side of the training steps (default 256)")
    p.add_argument("--train-batch", type=int, default=1, help="images per training step (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine more threads than free cores make "
                   "OpenMP threads wait on each other, 3x slower here; 0: all cores)")
    p.add_argument("--opts", nargs="*", default=[], help="extra KEY VALUE config overrides for every model")
    p.add_argument("--tag", default="", help="suffix of the output files (default: the backbones)")
    p.add_argument("--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="where the .json and .md go (default benchmarks/results)")
    return p.parse_args(argv)


def run_backbone(args, backbone, variants):
    from detectron2.utils.events import EventStorage

    cfgs = {v.name: common.build_cfg(backbone, v, args.size, args.detections, opts=args.opts) for v in variants}
    rows = {v.name: {"variant": v.name, "note": v.note, "overrides": v.overrides()} for v in variants}
    need_models = {"params", "macs", "neck", "model", "train"} & set(args.measure)
    torch.manual_seed(0)
    models = {name: build_model(cfg).eval() for name, cfg in cfgs.items()} if need_models else {}

    if "params" in args.measure:
        for name, model in models.items():
            rows[name].update(neck_params=common.neck_params(model.backbone), model_params=common.count_params(model))

    bottom_up_gmac = {}
    if "macs" in args.measure:
        bottom_up = models["plain"].backbone.bottom_up
        for size in args.sizes:
            common.log(f"{backbone}: GMAC at {size}")
            x = torch.zeros(1, 3, size, size)
            with torch.no_grad():
                feats = {k: v.detach() for k, v in bottom_up(x).items()}
                from fvcore.nn import FlopCountAnalysis

                a = FlopCountAnalysis(bottom_up, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                bottom_up_gmac[size] = a.total() / 1e9
            for name, model in models.items():
                rows[name][f"neck_gmac_{size}"] = neck_macs(model.backbone, feats, x)

    image = common.synthetic_image(args.size)
    timings = {}
    if "neck" in args.measure:
        common.log(f"{backbone}: neck-alone latency at {args.size}")
        with torch.no_grad():
            feats = {k: v.detach() for k, v in models["plain"].backbone.bottom_up(image[None]).items()}
        calls = {name: common.neck_only(m.backbone, feats) for name, m in models.items()}
        timings["neck"] = common.ratio_stats(common.interleaved(calls, args.neck_repeats, args.warmup, log=common.log))

    if "model" in args.measure:
        common.log(f"{backbone}: whole-model latency at {args.size}, {args.detections} detections")
        inputs = [{"image": image, "height": args.size, "width": args.size}]
        counts = {}

        def infer(name, model):
            def run():
                with torch.no_grad():
                    (out,) = model(inputs)
                counts[name] = len(out["instances"])
            return run

        calls = {name: infer(name, m) for name, m in models.items()}
        timings["model"] = common.ratio_stats(common.interleaved(calls, args.repeats, args.warmup, log=common.log))
        for name, n in counts.items():
            rows[name]["detections"] = n

    if "train" in args.measure:
        common.log(f"{backbone}: train step at {args.train_size}, batch {args.train_batch}")
        batch = common.training_batch(args.train_batch, args.train_size)
        optims = {name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for name, m in models.items()}

        def step(name, model):
            def run():
                model.train()
                with EventStorage():
                    loss = sum(model(batch).values())
                loss.backward()
                optims[name].step()
                optims[name].zero_grad(set_to_none=True)
                model.eval()
            return run

        calls = {name: step(name, m) for name, m in models.items()}
        timings["train"] = common.ratio_stats(common.interleaved(calls, args.train_repeats, args.warmup, log=common.log))

    for kind, stats in timings.items():
        for name, row in stats.items():
            rows[name][kind] = row
    return {"backbone": backbone, "bottom_up_gmac": bottom_up_gmac, "rows": list(rows.values())}


def neck_macs(backbone, feats, x) -> float:
    """GMAC of the neck alone (laterals, nodes, row and output convs, P6) on stored features."""
    from fvcore.nn import FlopCountAnalysis

    real = backbone.bottom_up
    backbone.bottom_up = common.CachedBottomUp(feats)
    try:
        with torch.no_grad():
            a = FlopCountAnalysis(backbone, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return a.total() / 1e9
    finally:
        backbone.bottom_up = real


def markdown(args, info, results):
    what = {"params": "params", "macs": "GMAC", "neck": "neck latency", "model": "whole-model latency",
            "train": "train step"}
    title = ", ".join(what[m] for m in MEASURES if m in args.measure)
    out = [common.header(f"Neck cost ({title}): " + ", ".join(r["backbone"] for r in results), info)]
    out.append(f"GMAC from fvcore (1 flop = 1 multiply-add). Latencies at {args.size}x{args.size}, "
               f"{args.detections} detections per image; train step at {args.train_size}x{args.train_size}, "
               f"batch {args.train_batch}. Times are median wall seconds; ratios are medians of per-round ratios "
               f"to plain in the same run (min-max in brackets), in wall time and in this process's CPU time "
               f"(which leaves out waits for a core on a shared machine). Random weights, shipped configs (GN everywhere).\n")
    for res in results:
        headers = ["neck", "form", "neck params (M)", "model params (M)"]
        headers += [f"neck GMAC @{s}" for s in args.sizes if f"neck_gmac_{s}" in res["rows"][0]]
        kinds = [k for k in ("neck", "model", "train") if k in res["rows"][0]]
        titles = {"neck": "neck alone", "model": "whole model", "train": "train step"}
        for k in kinds:
            headers += [f"{titles[k]} (s)", f"{titles[k]} / plain (wall)", f"{titles[k]} / plain (CPU)"]
        table = []
        for r in res["rows"]:
            row = [r["variant"], r["note"], f"{r['neck_params'] / 1e6:.2f}" if "neck_params" in r else "-",
                   f"{r['model_params'] / 1e6:.2f}" if "model_params" in r else "-"]
            row += [f"{r[f'neck_gmac_{s}']:.1f}" for s in args.sizes if f"neck_gmac_{s}" in r]
            for k in kinds:
                row += [f"{r[k]['median_s']:.3f}", common.fmt_ratio(r[k]), common.fmt_ratio(r[k], "cpu_ratio")]
            table.append(row)
        bu = ", ".join(f"{v:.1f} @{s}" for s, v in res["bottom_up_gmac"].items())
        out.append(f"#### {res['backbone']}" + (f" (bottom-up GMAC: {bu})" if bu else "") + "\n")
        out.append(common.markdown_table(headers, table) + "\n")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    common.quiet()
    common.set_threads(args.threads)
    names = ["plain"] + [v for v in args.variants if v != "plain"]
    variants = common.variants(names, args.wide_match)
    info = common.machine_info()
    results = []
    for backbone in args.backbones:
        results.append(run_backbone(args, backbone, variants))
    payload = {"args": vars(args), "machine": info, "results": results,
               "units": {"gmac": "1e9 multiply-adds (fvcore flops)", "times": "seconds"}}
    tag = args.tag or "_".join(args.backbones)
    md = markdown(args, info, results)
    print(md)
    common.write_outputs(args.output_dir, f"neck_cost_{tag}", payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
