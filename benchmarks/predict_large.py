#!/usr/bin/env python
"""Time and peak memory of tiled prediction on large images (default 1024, 2048 and 4096 px).

    python benchmarks/predict_large.py [--sizes 1024 2048 4096] [--config demo_sharp_R18_cpu]
        [--weights W] [--device cpu] [--threads N] [--tile-size 1024] [--tile-overlap 128]

Each size runs in its own process, so that its peak resident memory (``ru_maxrss``) is its own.
The image is a 16-bit grey TIFF: a 512 px synthetic Dsb2018-like image repeated to size.
Without --weights the model is random-init, its mask head set to fill each box and its score
threshold 0, so every tile gives TEST.DETECTIONS_PER_IMAGE solid objects: a stress test of the
merging, painting and writing (about one object per 1,300 px², the density of the synthetic
nuclei), not of accuracy. Every output format is written. Prints one JSON line per size and a
markdown table; record the machine with the numbers.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_image(path: Path, size: int) -> None:
    import tifffile

    from sharp_fpn.data.image_io import load_image_array
    from sharp_fpn.data.synthetic import make_synthetic_dataset

    with tempfile.TemporaryDirectory() as root:
        (sample,) = make_synthetic_dataset(root, num_images=1, size=(512, 512), seed=7, styles=("grey16_tif",))
        tile = load_image_array(next((Path(root) / sample / "images").iterdir()))
    reps = -(-size // 512)
    tifffile.imwrite(path, np.tile(tile, (reps, reps))[:size, :size])


def random_weights(config: str, opts, path: Path) -> None:
    import torch
    from detectron2.modeling import build_model

    from sharp_fpn import get_sharp_cfg
    from sharp_fpn.checkpoint import SharpCheckpointer

    torch.manual_seed(0)
    model = build_model(get_sharp_cfg(config, list(opts) + ["MODEL.DEVICE", "cpu"]))
    with torch.no_grad():
        model.roi_heads.mask_head.predictor.weight.zero_()
        model.roi_heads.mask_head.predictor.bias.fill_(4.0)
    SharpCheckpointer(model, save_dir=str(path.parent)).save(path.stem)


def run_one(args) -> dict:
    import torch

    from sharp_fpn.predict import NucleiPredictor, OutputFormats
    from sharp_fpn.predict.batch import write_image_outputs
    from sharp_fpn.predict.writers import coco_results, kaggle_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="predict_large_"))
    image_path = work / f"large_{args.size}.tif"
    make_image(image_path, args.size)
    score = 0.0 if args.random_init else args.score_threshold
    predictor = NucleiPredictor(args.config, args.weights, device=args.device, score_threshold=score, opts=args.opts,
                                tile_size=args.tile_size, tile_overlap=args.tile_overlap)
    predictor.predict(np.zeros((64, 64), np.uint8))  # warm-up: first-call costs are not per image
    rss_model = rss_mib()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tracemalloc.start()
    started = time.perf_counter()
    prediction = predictor.predict(image_path)
    predicted = time.perf_counter()
    write_image_outputs(prediction, work, "large", OutputFormats.everything())
    coco_results(1, prediction.labels, prediction.scores)
    kaggle_rows("large", prediction.labels)
    _ = prediction.table
    written = time.perf_counter()
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {
        "size": args.size,
        "tiles": prediction.num_tiles,
        "objects": prediction.num_objects,
        "predict_s": round(predicted - started, 2),
        "write_all_formats_s": round(written - predicted, 2),
        "peak_rss_mib": round(rss_mib()),
        "rss_after_model_load_mib": round(rss_model),
        "python_numpy_peak_mib": round(numpy_peak / 2**20),
        "config": args.config,
        "weights": "random init" if args.random_init else str(args.weights),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
        result["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    for path in sorted(work.iterdir()):
        path.unlink()
    work.rmdir()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="image sides (default: %(default)s)")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # one run, in this process
    parser.add_argument("--random-init", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="demo_sharp_R18_cpu", help="config (default: %(default)s)")
    parser.add_argument("--weights", help="checkpoint (default: random init, see above)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="with --weights (default: %(default)s)")
    parser.add_argument("--tile-size", type=int, default=1024, help="default: %(default)s")
    parser.add_argument("--tile-overlap", type=int, default=128, help="default: %(default)s")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.size:
        print(json.dumps(run_one(args)), flush=True)
        return
    rows = []
    scratch = tempfile.TemporaryDirectory(prefix="predict_large_weights_")
    random_init = not args.weights
    if random_init:
        args.weights = str(Path(scratch.name) / "random_init.pth")
        random_weights(args.config, args.opts, Path(args.weights))
    for size in args.sizes:
        command = [sys.executable, __file__, "--size", str(size), "--config", args.config, "--device", args.device,
                   "--threads", str(args.threads), "--score-threshold", str(args.score_threshold),
                   "--tile-size", str(args.tile_size), "--tile-overlap", str(args.tile_overlap)]
        command += ["--weights", args.weights] + (["--random-init"] if random_init else [])
        command += ["--opts", *args.opts] if args.opts else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"size {size} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    columns = ["size", "tiles", "objects", "predict_s", "write_all_formats_s", "peak_rss_mib", "rss_after_model_load_mib", "python_numpy_peak_mib"]
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    scratch.cleanup()
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    first = rows[0]
    print(f"\n{first['config']}, {first['weights']}, device {first['device']}, {first['torch_threads']} torch threads, "
          f"{first['cpu_count']} CPUs ({first['machine']})")


if __name__ == "__main__":
    main()
