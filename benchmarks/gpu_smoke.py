#!/usr/bin/env python
"""CUDA smoke test: every shipped config builds, takes one AMP training step and infers on the GPU.

    python benchmarks/gpu_smoke.py --output-dir gpu_results                    # on a GPU machine
    python benchmarks/gpu_smoke.py --device cpu --tiny --configs mask_rcnn_sharp_R50.yaml --output-dir /tmp/s

The CPU tests cannot catch device and dtype bugs: a tensor created on the CPU inside a module,
an op without a float16 kernel, a loss that overflows under autocast. Each config in configs/
(Mask R-CNN and the UNet family alike) is built with random weights on --device and takes one
training step on synthetic inputs the way Detectron2's AMPTrainer does (autocast float16, a
GradScaler; float32 on the CPU), then one float32 inference, as evaluation runs it. A config
passes when the loss is finite and the outputs are on the device. Results are written after
each config (gpu_smoke.json and gpu_smoke.md), so a run stopped by a time limit keeps what it
did; the exit status is 1 when any config failed.
"""
import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import gpu_bench  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from sharp_fpn import get_sharp_cfg  # noqa: E402
from sharp_fpn.config import CONFIG_DIR  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", required=True, help="where gpu_smoke.json and gpu_smoke.md go")
    p.add_argument("--configs", nargs="+", help="yaml names in configs/ (default: every one)")
    p.add_argument("--device", default="cuda", help="torch device (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="Mask R-CNN image side (default: %(default)s)")
    p.add_argument("--batch", type=int, default=2, help="images per training step (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="64 px Mask R-CNN, 32 px UNets, few proposals (CPU check)")
    return p.parse_args(argv)


def is_unet(cfg) -> bool:
    return cfg.MODEL.META_ARCHITECTURE == "SemanticUNet"


def load_config(name: str, args):
    """The shipped config on --device; with --tiny, shrunk to a quick CPU step."""
    cfg = get_sharp_cfg(name, ["MODEL.DEVICE", args.device])
    if args.tiny:
        cfg.defrost()
        if is_unet(cfg):
            cfg.INPUT.UNET.SIZE = 32
        else:
            cfg.merge_from_list([*gpu_bench.TINY_OPTS, "TEST.DETECTIONS_PER_IMAGE", "10"])
    return cfg


def inputs(cfg, args):
    """(training batch, one inference input) of the kind the config's model reads."""
    if is_unet(cfg):
        from sharp_fpn.unet.data import synthetic_semantic_set

        data = synthetic_semantic_set(args.batch, cfg.INPUT.UNET.SIZE)
        batch = [{"image": torch.from_numpy(image).permute(2, 0, 1).float(), "sem_seg": torch.from_numpy(mask).long()}
                 for image, mask in zip(data.images, data.masks)]
        return batch, [{"image": batch[0]["image"]}]
    size = 64 if args.tiny else args.size
    batch = common.training_batch(args.batch, size, n_objects=8 if args.tiny else 30)
    return batch, [{"image": common.synthetic_image(size), "height": size, "width": size}]


def output_tensors(outputs):
    """Every tensor of a model's inference output, for the device check."""
    for out in outputs:
        for value in out.values():
            if torch.is_tensor(value):
                yield value
            elif hasattr(value, "get_fields"):  # Instances
                yield from (v for v in value.get_fields().values() if torch.is_tensor(v))


def smoke(name: str, args) -> dict:
    cuda = args.device.startswith("cuda")
    started = time.perf_counter()
    cfg = load_config(name, args)
    torch.manual_seed(0)
    model = build_model(cfg)
    built = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    batch, image = inputs(cfg, args)
    model.train()
    with EventStorage(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        losses = model(batch)
    loss = sum(losses.values())
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    common.sync(args.device)
    stepped = time.perf_counter()
    model.eval()
    with torch.no_grad():
        outputs = model(image)
    common.sync(args.device)
    devices = sorted({t.device.type for t in output_tensors(outputs)})
    loss = float(loss)
    row = {"config": name, "model": "unet" if is_unet(cfg) else "mask_rcnn", "loss": loss,
           "loss_terms": {k: float(v) for k, v in losses.items()}, "output_devices": devices,
           "build_s": built - started, "step_s": stepped - built, "infer_s": time.perf_counter() - stepped,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")}
    problems = []
    if not math.isfinite(loss):
        problems.append(f"loss {loss}")
    if devices != [torch.device(args.device).type]:
        problems.append(f"outputs on {devices}")
    row["ok"], row["error"] = not problems, "; ".join(problems)
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return row


def markdown(rows, info, args, total_s: float) -> str:
    table = [[r["config"], "ok" if r["ok"] else f"FAILED: {r['error']}", f"{r.get('loss', float('nan')):.3f}",
              f"{r.get('build_s', 0):.1f}", f"{r.get('step_s', 0):.2f}", f"{r.get('infer_s', 0):.2f}",
              f"{r.get('peak_memory_gib', float('nan')):.2f}"] for r in rows]
    failed = sum(not r["ok"] for r in rows)
    return "\n".join([
        common.header(f"Smoke test on {info.get('device_name', args.device)}", info),
        f"{len(rows) - failed} of {len(rows)} configs passed: one training step ("
        + ("AMP float16" if args.device.startswith("cuda") else "float32")
        + f", batch {args.batch}) and one float32 inference each, random weights, synthetic inputs. "
        f"Total {total_s:.0f} s.\n",
        common.markdown_table(["config", "result", "loss", "build (s)", "train step (s)", "inference (s)",
                               "peak mem (GiB)"], table) + "\n",
    ])


def main(argv=None):
    args = parse_args(argv)
    common.quiet()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: CUDA is not available; use --device cpu (with --tiny)")
    names = args.configs or sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    info = common.machine_info(args.device)
    started = time.perf_counter()
    rows = []
    for name in names:
        try:
            row = smoke(name, args)
        except Exception as error:  # one broken config must not hide the others' results
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            row = {"config": name, "ok": False, "error": detail[:300]}
        rows.append(row)
        common.log(f"{name}: {'ok' if row['ok'] else 'FAILED ' + row['error']} "
                   f"({time.perf_counter() - started:.0f}s so far)")
        md = markdown(rows, info, args, time.perf_counter() - started)
        payload = {"args": vars(args), "machine": info, "rows": rows, "total_s": time.perf_counter() - started}
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_smoke.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
        (out / "gpu_smoke.md").write_text(md + "\n")
    print(md)
    print(f"wrote {Path(args.output_dir) / 'gpu_smoke.json'}\nwrote {Path(args.output_dir) / 'gpu_smoke.md'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
