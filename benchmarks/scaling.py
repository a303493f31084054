#!/usr/bin/env python
"""How cost grows with image side, and how evaluation time grows with objects per image.

    python benchmarks/scaling.py --part size --backbone R101 --sides 256 384 512 768 1024
    python benchmarks/scaling.py --part eval --objects 10 50 100 200 500

--part size: for each image side, the bottom-up's and each neck's GMAC (fvcore: 1 flop = 1
multiply-add) and the neck-alone CPU latency as a ratio to plain FPN, interleaved in the same
run; with --model also the whole Mask R-CNN's latency (--detections boxes and masks per image).
--part eval: for each number of objects per image, synthetic RLE nuclei (that many ground-truth
nuclei and that many detections per image), timed with pycocotools COCOeval segm (maxDets
[1, 100, 500]), faster-coco-eval when installed, and sharp_fpn.evaluation's metric functions
when present. Writes scaling_size_<backbone>.json/.md and scaling_eval.json/.md.
"""
import argparse
import contextlib
import io
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from neck_cost import neck_macs  # noqa: E402
from synthetic_results import coco_dataset, make_result_set  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", default=["size", "eval"], choices=["size", "eval"],
                   help="what to measure (default: both)")
    p.add_argument("--backbone", default="R101", help="bottom-up for --part size (default R101)")
    p.add_argument("--variants", nargs="+", default=["plain", "sharp", "sharp_sum", "sharp_sep"],
                   help="necks for --part size; plain is always added (default: %(default)s)")
    p.add_argument("--sides", nargs="+", type=int, default=[256, 384, 512, 768, 1024],
                   help="image sides (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per side (default 3)")
    p.add_argument("--model", action="store_true", help="also time the whole model at each side")
    p.add_argument("--detections", type=int, default=100, help="detections per image with --model (default 100)")
    p.add_argument("--objects", nargs="+", type=int, default=[10, 50, 100, 200, 500],
                   help="objects per image for --part eval (default: %(default)s)")
    p.add_argument("--eval-images", type=int, default=20, help="images per point of --part eval (default 20)")
    p.add_argument("--eval-size", type=int, default=512, help="image side for --part eval (default 512)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine more threads than free cores make "
                   "OpenMP threads wait on each other, 3x slower here; 0: all cores)")
    p.add_argument("--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="where the outputs go (default benchmarks/results)")
    return p.parse_args(argv)


def size_part(args, info):
    names = ["plain"] + [v for v in args.variants if v != "plain"]
    variants = common.variants(names)
    torch.manual_seed(0)
    models = {v.name: build_model(common.build_cfg(args.backbone, v, detections=args.detections)).eval()
              for v in variants}
    bottom_up = models["plain"].backbone.bottom_up
    from fvcore.nn import FlopCountAnalysis

    points = []
    for side in args.sides:
        common.log(f"side {side}")
        x = torch.zeros(1, 3, side, side)
        with torch.no_grad():
            a = FlopCountAnalysis(bottom_up, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            point = {"side": side, "bottom_up_gmac": a.total() / 1e9, "necks": {}}
            image = common.synthetic_image(side)
            feats = {k: v.detach() for k, v in bottom_up(image[None]).items()}
        for name, model in models.items():
            point["necks"][name] = {"gmac": neck_macs(model.backbone, feats, x)}
        calls = {name: common.neck_only(m.backbone, feats) for name, m in models.items()}
        for name, row in common.ratio_stats(common.interleaved(calls, args.repeats, 1, log=common.log)).items():
            point["necks"][name]["neck"] = row
        if args.model:
            inputs = [{"image": image, "height": side, "width": side}]

            def infer(model):
                def run():
                    with torch.no_grad():
                        model(inputs)
                return run

            calls = {name: infer(m) for name, m in models.items()}
            for name, row in common.ratio_stats(common.interleaved(calls, args.repeats, 1, log=common.log)).items():
                point["necks"][name]["model"] = row
        points.append(point)

    headers = ["side", "bottom-up GMAC"] + [f"{n} neck GMAC" for n in models]
    headers += [f"{n} neck s (/plain)" for n in models]
    if args.model:
        headers += [f"{n} model s (/plain)" for n in models]
    rows = []
    for pt in points:
        row = [pt["side"], f"{pt['bottom_up_gmac']:.1f}"]
        row += [f"{pt['necks'][n]['gmac']:.1f}" for n in models]
        for kind in ("neck", "model") if args.model else ("neck",):
            row += [f"{pt['necks'][n][kind]['median_s']:.2f} ({pt['necks'][n][kind].get('ratio', 1):.2f}, "
                    f"{pt['necks'][n][kind].get('cpu_ratio', 1):.2f})" for n in models]
        rows.append(row)
    forms = "; ".join(f"{v.name}: {v.note}" for v in variants)
    md = "\n".join([common.header(f"Scaling with image side ({args.backbone})", info),
                    f"Necks: {forms}. GMAC from fvcore (1 flop = 1 multiply-add). Times: median seconds over "
                    f"{args.repeats} interleaved rounds, (ratio to plain in wall time, in CPU time; medians of "
                    f"per-round ratios)"
                    + (f"; whole model with {args.detections} detections per image" if args.model else "") + ".\n",
                    common.markdown_table(headers, rows) + "\n"])
    print(md)
    payload = {"args": vars(args), "machine": info, "points": points, "variants": [v.__dict__ for v in variants]}
    common.write_outputs(args.output_dir, f"scaling_size_{args.backbone}", payload, md)


def _time(fn, repeats=1):
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return min(best)


def eval_part(args, info):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    try:
        import faster_coco_eval
    except ImportError:
        faster_coco_eval = None
    try:
        from sharp_fpn import evaluation as sharp_eval
    except ImportError:
        sharp_eval = None

    points = []
    for n in args.objects:
        rs = make_result_set(args.eval_images, n, args.eval_size, n_gt=[n] * args.eval_images, seed=n)
        dataset, dets = coco_dataset(rs), rs["detections"]
        point = {"objects": n, "images": args.eval_images}

        def pycoco():
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO()
                gt.dataset = {k: list(v) for k, v in dataset.items()}
                gt.createIndex()
                ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "segm")
                ev.params.maxDets = [1, 100, 500]
                ev.evaluate()
                ev.accumulate()
                ev.summarize()

        point["pycocotools_s"] = _time(pycoco)
        if faster_coco_eval is not None:
            def faster():
                with contextlib.redirect_stdout(io.StringIO()):
                    gt = faster_coco_eval.COCO({k: list(v) for k, v in dataset.items()})
                    ev = faster_coco_eval.COCOeval_faster(gt, gt.loadRes([dict(d) for d in dets]), "segm",
                                                          print_function=lambda *a, **k: None)
                    ev.params.maxDets = [1, 100, 500]
                    ev.evaluate()
                    ev.accumulate()
                    ev.summarize()

            point["faster_coco_eval_s"] = _time(faster)
        if sharp_eval is not None:
            by_image = {}
            for a in rs["annotations"]:
                by_image.setdefault(a["image_id"], ([], [], []))[0].append(a["segmentation"])
            for d in dets:
                entry = by_image.setdefault(d["image_id"], ([], [], []))
                entry[1].append(d["segmentation"])
                entry[2].append(d["score"])

            def per_image():
                results = [sharp_eval.evaluate_image(g, p, s) for g, p, s in by_image.values()]
                sharp_eval.dsb_score(results)
                sharp_eval.detection_scores(results)
                sharp_eval.foreground_scores(results)

            def coco_ap():
                with contextlib.redirect_stdout(io.StringIO()):
                    sharp_eval.coco_ap(rs["images"], rs["annotations"], dets, "segm", max_dets=500)

            point["sharp_fpn_evaluate_image_dsb_s"] = _time(per_image)
            point["sharp_fpn_coco_ap_s"] = _time(coco_ap)
        common.log(f"{n} objects: " + ", ".join(f"{k} {v:.2f}" for k, v in point.items() if k.endswith("_s")))
        points.append(point)

    cols = [k for k in points[0] if k.endswith("_s")]
    titles = {"pycocotools_s": "pycocotools COCOeval", "faster_coco_eval_s": "faster-coco-eval",
              "sharp_fpn_evaluate_image_dsb_s": "sharp_fpn evaluate_image + DSB/F1/pixel",
              "sharp_fpn_coco_ap_s": "sharp_fpn coco_ap (segm)"}
    headers = ["objects/image"] + [f"{titles[c]} (ms/image)" for c in cols]
    rows = [[p["objects"]] + [f"{1000 * p[c] / p['images']:.1f}" for c in cols] for p in points]
    md = "\n".join([common.header("Evaluation time vs objects per image", info),
                    f"{args.eval_images} synthetic {args.eval_size}x{args.eval_size} images per point, N ground-truth "
                    f"nuclei and N detections (jittered copies) per image; COCOeval segm, maxDets [1, 100, 500], "
                    f"evaluate + accumulate + summarize, including loadRes. One run per cell.\n",
                    common.markdown_table(headers, rows) + "\n"])
    print(md)
    common.write_outputs(args.output_dir, "scaling_eval", {"args": vars(args), "machine": info, "points": points}, md)


def main(argv=None):
    args = parse_args(argv)
    common.quiet()
    common.set_threads(args.threads)
    info = common.machine_info()
    if "eval" in args.part:
        eval_part(args, info)
    if "size" in args.part:
        size_part(args, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
