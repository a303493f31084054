#!/usr/bin/env python
"""Parameters, multiply-accumulates and inference speed of the UNet family, of UNet# pruned
to L1-L4 (the seed's Table 1 "Params" column and Fig. 7) and of the models on ImageNet VGG16 /
ResNet-101 encoders (its Table 2, upper part), at the seed's 96x96.

    python benchmarks/unet_cost.py --device cpu --threads 2 --out output/unet_cost.json
    python benchmarks/unet_cost.py --no-speed --out output/unet_params.json    # counts and MACs only

MACs count convolutions and linear layers (what dominates); speed is images per second of
the inference model (no deep-supervision heads), after warm-up, median of a few timed rounds.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_imports import ensure_importable  # noqa: E402

ensure_importable()
from sharp_fpn.unet.model import count_parameters  # noqa: E402
from sharp_fpn.unet.pruning import prune  # noqa: E402
from sharp_fpn.unet.zoo import FILTERS, build_unet  # noqa: E402


def inference_models():
    """(label, model) pairs: the Table 1 models, then UNet# pruned from a deeply supervised one."""
    models = [(name, build_unet(name)) for name in ("unet", "wide_unet", "unet++", "unet3+", "unet#")]
    supervised = build_unet("unet#", deep_supervision=True)
    models += [(f"unet# L{level}", prune(supervised, level)) for level in (1, 2, 3, 4)]
    models += [
        (f"unet# L{level} raw concat", build_unet("unet#", filters=FILTERS[: level + 1], branch_channels=0))
        for level in (2, 3, 4)
    ]
    models += [
        (f"{name} {encoder}", build_unet(name, encoder=encoder))
        for encoder in ("VGG16", "R101") for name in ("unet", "unet++", "unet3+", "unet#")
    ]
    return models


def count_macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of one forward pass of one image, over Conv2d and Linear layers."""
    total = [0]

    def on_conv(module, inputs, output):
        total[0] += output[0].numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]

    def on_linear(module, inputs, output):
        total[0] += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(on_linear) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return total[0]


@torch.no_grad()
def images_per_second(model: nn.Module, size: int, batch: int, device: torch.device, rounds: int = 5) -> float:
    model = model.eval().to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    timings = []
    for round_ in range(rounds + 2):  # two warm-up rounds
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        repeats = 20 if device.type == "cuda" else 2
        for _ in range(repeats):
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if round_ >= 2:
            timings.append((time.perf_counter() - start) / repeats)
    return batch / statistics.median(timings)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0: PyTorch's choice (default: %(default)s)")
    parser.add_argument("--size", type=int, default=96, help="image side (default: %(default)s)")
    parser.add_argument("--batches", default="1,32", help="batch sizes to time (default: %(default)s)")
    parser.add_argument("--no-speed", action="store_true", help="count parameters and MACs only, time nothing")
    parser.add_argument("--out", default="output/unet_cost.json", help="JSON output (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for label, model in inference_models():
        row = {"model": label, "params": count_parameters(model), "encoder_params": count_parameters(model.encoder),
               "gmac": count_macs(model, args.size) / 1e9}
        for batch in () if args.no_speed else (int(b) for b in args.batches.split(",")):
            row[f"img_per_s_b{batch}"] = images_per_second(model, args.size, batch, device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": name, "size": args.size, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
