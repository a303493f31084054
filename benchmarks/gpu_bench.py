#!/usr/bin/env python
"""GPU throughput of each neck: training images/s and peak memory with AMP, inference latency.

    python benchmarks/gpu_bench.py --output-dir gpu_results            # on a GPU machine
    python benchmarks/gpu_bench.py --tiny --device cpu --output-dir /tmp/gpu_tiny   # smoke test

Mask R-CNN with each neck on --backbone (default R101) at --size x --size (default 512), random
weights and synthetic inputs (square nuclei), so it needs only torch, detectron2 and this
repository: no data files, no weights. Training: --batch images per step, SGD, autocast float16
with a GradScaler (--no-amp for float32); throughput over --iters steps after --warmup steps;
peak memory is torch.cuda.max_memory_allocated over the timed steps. Inference: one image, the
heads set to return exactly --detections boxes and masks, median latency over --infer-iters
calls. Names the device (torch.cuda.get_device_name) in gpu_bench.json and gpu_bench.md.
The four schemes and sharp's cheaper pw_dw form should take 2-3 minutes on an H100; necks
left when --budget-s runs out are skipped and listed. Both files are rewritten after each neck,
so a run stopped by a time limit keeps the necks it measured.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

TINY_OPTS = ["MODEL.RPN.PRE_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20",
             "MODEL.RPN.PRE_NMS_TOPK_TEST", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
             "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", required=True, help="where gpu_bench.json and gpu_bench.md go (created if missing)")
    p.add_argument("--necks", nargs="+", default=["plain", "nested", "full_scale", "sharp", "sharp_pwdw"],
                   help="neck variants (default: %(default)s; others: wide_plain, nested_sum, full_scale_sum, "
                   "sharp_sum, " + ", ".join(common.CHEAP_SHARP_VARIANTS) + ")")
    p.add_argument("--backbone", default="R101", help="R50, R101 or VGG16 (default R101)")
    p.add_argument("--size", type=int, default=512, help="image side (default 512)")
    p.add_argument("--batch", type=int, default=8, help="images per training step (default 8)")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps and inference calls (default 5)")
    p.add_argument("--iters", type=int, default=20, help="timed training steps (default 20)")
    p.add_argument("--infer-iters", type=int, default=30, help="timed inference calls (default 30)")
    p.add_argument("--detections", type=int, default=100, help="boxes and masks per image in inference (default 100)")
    p.add_argument("--no-amp", action="store_true", help="train and infer in float32 instead of float16 autocast")
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--budget-s", type=float, default=170,
                   help="skip the necks left once this many seconds have passed (default 170)")
    p.add_argument("--tiny", action="store_true", help="64 px, batch 2, 2 steps, few proposals: a smoke test")
    return p.parse_args(argv)


def bench_neck(args, variant, device, amp):
    from detectron2.utils.events import EventStorage

    opts = ["SOLVER.AMP.ENABLED", str(amp)] + (TINY_OPTS if args.tiny else [])
    cfg = common.build_cfg(args.backbone, variant, args.size, args.detections, device=device, opts=opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    params = common.count_params(model)
    neck_params = common.neck_params(model.backbone)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    cuda = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)
    autocast = dict(device_type="cuda" if cuda else "cpu", dtype=torch.float16 if cuda else torch.bfloat16,
                    enabled=amp)
    batch = common.training_batch(args.batch, args.size, n_objects=8 if args.tiny else 30)

    def train_step():
        with EventStorage(), torch.autocast(**autocast):
            loss = sum(model(batch).values())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    model.train()
    for _ in range(args.warmup):
        train_step()
    common.sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        loss = train_step()
    common.sync(device)
    train_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")

    model.eval()
    image = common.synthetic_image(args.size, device=device)
    inputs = [{"image": image, "height": args.size, "width": args.size}]
    latencies = []
    with torch.no_grad(), torch.autocast(**autocast):
        for k in range(args.warmup + args.infer_iters):
            common.sync(device)
            t = time.perf_counter()
            model(inputs)
            common.sync(device)
            if k >= args.warmup:
                latencies.append(time.perf_counter() - t)
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return {"variant": variant.name, "note": variant.note, "params": params, "neck_params": neck_params,
            "train_images_per_s": args.batch * args.iters / train_s, "train_step_s": train_s / args.iters,
            "peak_memory_gib": peak, "infer_latency_ms": 1000 * statistics.median(latencies),
            "infer_latencies_ms": [1000 * t for t in latencies], "final_loss": float(loss)}


def write_report(args, info, amp, rows, skipped, total_s: float) -> str:
    """Write gpu_bench.json and gpu_bench.md of the necks measured so far; returns the markdown."""
    plain = rows[0]
    table = []
    for r in rows:
        table.append([r["variant"], r["note"], f"{r['neck_params'] / 1e6:.2f}", f"{r['train_images_per_s']:.1f}",
                      f"{plain['train_images_per_s'] / r['train_images_per_s']:.2f}", f"{r['peak_memory_gib']:.2f}",
                      f"{r['infer_latency_ms']:.1f}", f"{r['infer_latency_ms'] / plain['infer_latency_ms']:.2f}"])
    precision = "AMP float16" if amp else "float32"
    md = "\n".join([
        common.header(f"GPU: {args.backbone} at {args.size}x{args.size} on {info.get('device_name', args.device)}", info),
        f"Training: batch {args.batch}, {precision}, {args.iters} timed steps after {args.warmup}; peak memory = "
        f"torch.cuda.max_memory_allocated. Inference: 1 image, {args.detections} detections, median of "
        f"{args.infer_iters} calls. Random weights, synthetic inputs. Total {total_s:.0f} s."
        + (f" Skipped (time budget): {', '.join(skipped)}." if skipped else "") + "\n",
        common.markdown_table(["neck", "form", "neck params (M)", "train img/s", "step time / plain",
                               "peak mem (GiB)", "inference (ms)", "inference / plain"], table) + "\n",
    ])
    payload = {"args": vars(args), "machine": info, "precision": precision, "rows": rows, "skipped": skipped,
               "total_s": total_s}
    common.write_outputs(args.output_dir, "gpu_bench", payload, md)
    return md


def main(argv=None):
    args = parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.warmup, args.iters, args.infer_iters = 64, 2, 1, 2, 2
        args.detections = min(args.detections, 10)
        args.budget_s = float("inf")  # a smoke test runs every neck it is given
    common.quiet()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: CUDA is not available; use --device cpu (with --tiny for a smoke test)")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    amp = not args.no_amp and device.startswith("cuda")
    info = common.machine_info(device)
    names = ["plain"] + [n for n in args.necks if n != "plain"]
    started = time.perf_counter()
    rows, skipped = [], []
    for variant in common.variants(names):
        if time.perf_counter() - started > args.budget_s:
            skipped.append(variant.name)
            continue
        rows.append(bench_neck(args, variant, device, amp))
        r = rows[-1]
        common.log(f"{r['variant']}: {r['train_images_per_s']:.1f} img/s, {r['peak_memory_gib']:.2f} GiB, "
                   f"{r['infer_latency_ms']:.1f} ms ({time.perf_counter() - started:.0f}s so far)")
        write_report(args, info, amp, rows, skipped, time.perf_counter() - started)  # a killed run keeps these
    md = write_report(args, info, amp, rows, skipped, time.perf_counter() - started)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
