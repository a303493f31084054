#!/usr/bin/env python
"""Reproduce the seed's Table 1 (Dsb2018 column), Fig. 7 (pruning) and the UNet rows of its
Table 2 (VGG16 / ResNet-101 encoders) within a time box.

A plain PyTorch loop over the package's own pieces (models, hybrid loss, deep supervision,
augmentation, metrics) with the seed's protocol: 96x96 images, 80/20 split, Adam (lr 1e-3,
weight decay 1e-4), cosine annealing per step, RandomRotate90/flips/colour augmentation,
done on batched tensors on the device. It needs only PyTorch and NumPy, so it also runs on a
GPU box without Detectron2; tools/train_net.py with configs/unet_*.yaml is the Detectron2 route to the same models.

    python benchmarks/unet_reproduce.py --data output/cache/dsb2018_semantic_96px_*.npz \
        --runs unet,unet#_ds --epochs 100 --device cuda --out output/unet_runs.json

Each run writes its JSON when done: validation scores per evaluated epoch (every definition
of sharp_fpn.unet.metrics, as fractions; JSONs written before 2026-11-30 hold percents), the
best and final scores, parameters, wall time and, for deep supervision, every first-row head
read alone (the pruned model L^i of embedded training). The encoder runs ("unet_VGG16", ...)
need Detectron2 and start from ImageNet weights only when given a local torchvision file
(--encoder-weights VGG16=vgg16_bn-*.pth R101=resnet101-*.pth).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_imports import ensure_importable  # noqa: E402

ensure_importable()
from sharp_fpn.unet.augment import augment, normalize  # noqa: E402
from sharp_fpn.unet.data import SemanticSet, load_dsb2018_semantic, synthetic_semantic_set  # noqa: E402
from sharp_fpn.unet.metrics import ForegroundScores  # noqa: E402
from sharp_fpn.unet.model import count_parameters  # noqa: E402
from sharp_fpn.unet.supervision import DeepSupervisionLoss, combine_heads  # noqa: E402
from sharp_fpn.unet.zoo import FILTERS, build_unet  # noqa: E402

# run name -> build_unet arguments. "_L<i>" runs are isolated training of the pruned UNet#.
RUNS = {
    "unet": dict(name="unet"),
    "wide_unet": dict(name="wide_unet"),
    "unet++": dict(name="unet++"),
    "unet++_ds": dict(name="unet++", deep_supervision=True),
    "unet3+": dict(name="unet3+"),
    "unet3+_ds": dict(name="unet3+", deep_supervision=True),
    "unet#": dict(name="unet#"),
    "unet#_ds": dict(name="unet#", deep_supervision=True),
    "unet#_ds_cgm": dict(name="unet#", deep_supervision=True, cgm=True),
    **{f"unet#_L{i}": dict(name="unet#", filters=FILTERS[: i + 1], deep_supervision=True) for i in (1, 2, 3)},
    # Table 2, upper part: Table 1's decoders on ImageNet encoders
    **{f"{name}_{encoder}": dict(name=name, encoder=encoder)
       for encoder in ("VGG16", "R101") for name in ("unet", "unet#")},
}
SYNTHETIC = "synthetic"  # --data value for a generated 16-image set (smoke runs and tests)


def load_data(path: str, size: int, cache_dir: str) -> SemanticSet:
    if path == SYNTHETIC:
        return synthetic_semantic_set(16, size)
    if path.endswith(".npz"):
        with np.load(path) as cached:
            return SemanticSet(cached["images"], cached["masks"], [str(i) for i in cached["ids"]])
    return load_dsb2018_semantic(path, size, cache_dir or None)


def to_tensors(data: SemanticSet, device):
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div_(255).to(device)
    masks = torch.from_numpy(data.masks)[:, None].float().to(device)
    return images, masks


@torch.no_grad()
def evaluate(model, images, masks, batch_size: int, amp: bool = False):
    """Foreground scores of the accurate-mode output and of each first-row head alone."""
    model.eval()
    accurate = ForegroundScores()
    per_head = {}
    for start in range(0, len(images), batch_size):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(normalize(images[start : start + batch_size] * 255))
        target = masks[start : start + batch_size]
        accurate.update(combine_heads(out, "accurate"), target)
        for node in out.logits:
            if node[0] == 0:
                per_head.setdefault(node[1], ForegroundScores()).update(combine_heads(out, "fast", node[1]), target)
    model.train()
    return accurate.summary(), {f"L{level}": s.summary() for level, s in sorted(per_head.items())}


def build_run_model(name: str, args):
    """The model of run ``name``, with --filters and --encoder-weights applied."""
    spec = dict(RUNS[name])
    if args.filters:
        spec["filters"] = args.filters[: len(spec.get("filters", FILTERS))]
    if spec.get("encoder") in args.encoder_weights:
        spec["encoder_weights"] = args.encoder_weights[spec["encoder"]]
    return build_unet(**spec)


def train_run(name: str, args, train, val):
    """Train run ``name``; returns its record and the trained model."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.amp else torch.contiguous_format
    model = build_run_model(name, args).to(device, memory_format=memory_format)
    criterion = DeepSupervisionLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    train_images, train_masks = to_tensors(train, device)
    val_images, val_masks = to_tensors(val, device)
    steps_per_epoch = len(train_images) // args.batch_size  # drop the last partial batch
    # Cosine annealing to 0 over the whole run. With a time box, the run's length in epochs
    # is fixed after the first epoch (from its duration), so the schedule still anneals fully.
    plan = {"epochs": args.epochs}
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / (plan["epochs"] * steps_per_epoch), 1)))
    )
    generator = torch.Generator(device=device).manual_seed(args.seed)
    record = {
        "run": name, "model": RUNS[name], "params": count_parameters(model), "device": device_name(device),
        "epochs_planned": args.epochs, "batch_size": args.batch_size, "amp": args.amp, "train_images": len(train_images),
        "val_images": len(val_images), "history": [],
    }
    start = time.time()
    epoch = 0
    while epoch < plan["epochs"]:
        epoch += 1
        order = torch.randperm(len(train_images), device=device, generator=generator)
        losses = []
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            images, masks = augment(train_images[batch], train_masks[batch], generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                loss = sum(criterion(model(normalize(images * 255)), masks).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
        if epoch <= 2 and args.time_budget_s:  # epoch 1 includes warm-up: epoch 2 sets the pace
            elapsed = time.time() - start
            pace = elapsed if epoch == 1 else elapsed - record["epoch_1_s"]
            record.setdefault("epoch_1_s", elapsed)
            plan["epochs"] = max(epoch, min(args.epochs, epoch + int((args.time_budget_s - elapsed) / pace)))
            record["epochs_planned"] = plan["epochs"]
        out_of_time = time.time() - start > args.time_limit_s
        if epoch % args.eval_every == 0 or epoch == plan["epochs"] or out_of_time:
            scores, heads = evaluate(model, val_images, val_masks, args.batch_size * 4, args.amp)
            entry = {"epoch": epoch, "loss": torch.stack(losses).mean().item(), "wall_s": time.time() - start, **scores}
            if len(heads) > 1:
                entry["heads"] = heads
            record["history"].append(entry)
            print(f"[{name}] epoch {epoch} loss {entry['loss']:.4f} val IoU {scores['iou']:.4f} "
                  f"({entry['wall_s']:.0f}s)", flush=True)
        if out_of_time:
            break
    record["epochs_done"] = epoch
    record["train_wall_s"] = time.time() - start
    record["final"] = record["history"][-1]
    record["best"] = max(record["history"], key=lambda h: h["iou"])
    return record, model


def run_file_stem(name: str) -> str:
    """A run name as a file name: "unet#_ds" -> "unetsharp_ds", "unet++" -> "unetpp"."""
    return name.replace("#", "sharp").replace("+", "p")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def encoder_weights(value: str):
    """ENCODER=PATH (VGG16=... or R101=...) -> (encoder, path)."""
    encoder, _, path = value.partition("=")
    if encoder not in ("VGG16", "R101") or not path:
        raise argparse.ArgumentTypeError(f"expected VGG16=PATH or R101=PATH, got {value!r}")
    return encoder, path


def add_training_args(parser: argparse.ArgumentParser, default_runs: str, default_epochs: int,
                      data_required: bool = True) -> None:
    """The data, model and training options, shared with benchmarks/iou_definitions.py."""
    parser.add_argument("--data", required=data_required,
                        help=f"a .npz cache, a Dsb2018 stage folder or {SYNTHETIC!r}")
    parser.add_argument("--cache-dir", default="output/cache", help="where a folder's .npz goes (default: %(default)s)")
    parser.add_argument("--runs", default=default_runs, help=f"comma-separated, of: {', '.join(RUNS)} "
                        "(default: %(default)s)")
    parser.add_argument("--filters", type=lambda v: [int(f) for f in v.split(",")], default=None,
                        help="decoder widths for every run instead of the paper's, e.g. 4,8,16,32,64 for a smoke run")
    parser.add_argument("--encoder-weights", nargs="*", type=encoder_weights, default=[],
                        help="local torchvision ImageNet files for the encoder runs: VGG16=PATH R101=PATH "
                        "(default: none, random weights)")
    parser.add_argument("--epochs", type=int, default=default_epochs,
                        help="epochs per run (seed: 100; default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="default: %(default)s")
    parser.add_argument("--size", type=int, default=96, help="image side (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between validations (default: %(default)s)")
    parser.add_argument("--time-budget-s", type=float, default=0,
                        help="fit the run in about this many seconds: after the first epoch, cut --epochs to "
                        "what the budget allows, keeping a full cosine schedule (default: 0, no cut)")
    parser.add_argument("--time-limit-s", type=float, default=math.inf,
                        help="hard stop after the epoch that passes this many seconds (default: none)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast and channels-last (GPU speed)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: %(default)s")


def check_runs(args, script: str) -> None:
    """Exit with one line on an unknown run name; turn --encoder-weights into a dict."""
    unknown = [r for r in args.runs.split(",") if r not in RUNS]
    if unknown:
        sys.exit(f"{script}: unknown runs {unknown}; choose from {', '.join(RUNS)}")
    args.encoder_weights = dict(args.encoder_weights)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(parser, default_runs="unet,unet#", default_epochs=100)
    parser.add_argument("--prepare-only", action="store_true", help="only build the data cache (from a folder)")
    parser.add_argument("--out", default="output/unet_runs", help="folder for one JSON per run (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = True
    check_runs(args, "unet_reproduce.py")
    data = load_data(args.data, args.size, args.cache_dir)
    if args.prepare_only:
        print(f"{len(data)} images of {args.size}x{args.size} px, cached in {args.cache_dir}")
        return
    train, val = data.split(args.val_fraction, args.seed)
    os.makedirs(args.out, exist_ok=True)
    for name in args.runs.split(","):
        record, _ = train_run(name, args, train, val)
        record["command"] = " ".join(sys.argv)
        path = Path(args.out) / f"{run_file_stem(name)}.json"
        path.write_text(json.dumps(record, indent=1))
        print(f"[{name}] best IoU {record['best']['iou']:.4f} at epoch {record['best']['epoch']}, "
              f"final {record['final']['iou']:.4f}; wrote {path}", flush=True)


if __name__ == "__main__":
    main()
