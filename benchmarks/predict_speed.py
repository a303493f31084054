#!/usr/bin/env python
"""CPU prediction time per megapixel and peak memory of a nuclei model, on real-sized images.

    python benchmarks/predict_speed.py [--model nuclei | --weights W [--config C]]
        [--images examples/] [--repeats 3] [--threads 1] [--device cpu] [--output-dir DIR]

By default the shipped model predicts the shipped example images (examples/). Per image: the
median wall seconds of ``NucleiPredictor.predict`` (an array already read, so the disk is not
timed; outputs are not written: benchmarks/predict_large.py times that) over --repeats runs,
after one warm-up run, per megapixel of the *file*. The model sees each image at its config's
test scale, so a model that enlarges images 2x does about 4x the work per file megapixel; the
table gives the scale and the tiles. Memory is the process's peak resident set (ru_maxrss),
after loading the model and after each image, images taken from the smallest up. Writes
predict_speed.json and .md.

    python benchmarks/predict_speed.py --profile --images DIR [--output-dir DIR]

instead predicts the images once, as tools/predict.py does (reading and every output format
included), after one warm-up image, and splits the wall time into stages: reading, resize,
backbone, neck, RPN, box head, mask head, mask paste and label painting, tiling merge and the
writing of each format. Writes predict_profile.json and .md.
"""
import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch

from sharp_fpn.data.image_io import load_image_array
from sharp_fpn.demo import EXAMPLES_DIR
from sharp_fpn.predict import NucleiPredictor, OutputFormats, SetupError, expand_inputs, predict_files
from sharp_fpn.predict.pretrained import DEFAULT_MODEL


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", help=f"a shipped model by name (default: {DEFAULT_MODEL}, unless --weights is given)")
    model.add_argument("--weights", help="your own checkpoint instead")
    p.add_argument("--config", help="with --weights: its config (default: config.yaml beside it)")
    p.add_argument("--images", nargs="+", default=[str(EXAMPLES_DIR)], help="files, folders or globs (default: examples/)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per image (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads; 0: all cores (default 1)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--score-threshold", type=float, default=0.5, help="default 0.5")
    p.add_argument("--profile", action="store_true", help="split one pass over the images, outputs included, into stages")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides, last on the line")
    p.add_argument("--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="where predict_speed.json and .md go (default benchmarks/results)")
    return p.parse_args(argv)


def load_predictor(args) -> NucleiPredictor:
    options = dict(device=args.device, score_threshold=args.score_threshold, opts=args.opts)
    if args.weights:
        config = args.config or str(Path(args.weights).parent / "config.yaml")
        return NucleiPredictor(config, args.weights, **options)
    return NucleiPredictor.from_pretrained(args.model or DEFAULT_MODEL, **options)


def measure(predictor: NucleiPredictor, files, repeats: int) -> list:
    """One row per image, smallest first: size, scale, tiles, objects, median seconds, s/MP, peak RSS."""
    arrays = sorted(((file, load_image_array(file)) for file in files), key=lambda item: item[1].shape[0] * item[1].shape[1])
    rows = []
    for file, array in arrays:
        prediction = predictor.predict(array)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            predictor.predict(array)
            times.append(time.perf_counter() - started)
        height, width = array.shape[:2]
        megapixels = height * width / 1e6
        median = statistics.median(times)
        rows.append({"image": file.name, "height": height, "width": width, "megapixels": megapixels,
                     "scale": prediction.scale[0], "tiles": prediction.num_tiles, "objects": prediction.num_objects,
                     "times_s": times, "median_s": median, "s_per_megapixel": median / megapixels,
                     "peak_rss_mib": peak_rss_mib()})
        common.log(f"  {file.name}: {height}x{width}, {median:.2f} s, {median / megapixels:.2f} s/MP")
    return rows


def profile_stages(predictor: NucleiPredictor, files) -> dict:
    """Exclusive wall seconds per stage of predicting ``files`` and writing every output format."""
    from detectron2.data import transforms as T

    import sharp_fpn.predict.batch as batch
    import sharp_fpn.predict.predictor as predictor_module
    from sharp_fpn.predict import writers

    model, timer = predictor.model, common.StageTimer()
    for owner, attribute, stage in [
        (predictor_module, "load_image_array", "reading"), (T.ResizeTransform, "apply_image", "resize"),
        (predictor, "detect", "model input and output"), (model, "preprocess_image", "model input and output"),
        (model.backbone.bottom_up, "forward", "backbone"), (model.backbone, "forward", "neck"),
        (model.proposal_generator, "forward", "RPN"), (model.roi_heads, "_forward_box", "box head"),
        (model.roi_heads, "_forward_mask", "mask head"),
        (predictor_module, "paint_labels", "mask paste and label painting"),
        (predictor_module, "detect_tiled", "tiling merge"), (predictor, "predict", "other"),
        (predictor_module, "object_table", "object table (objects CSV)"),
        (writers, "write_label_tiff", "write label TIFF"), (writers, "write_overlay_png", "write overlay PNG"),
        (writers, "write_objects_csv", "write objects CSV"), (writers, "write_geojson", "write GeoJSON"),
        (writers, "write_imagej_zip", "write ImageJ ROIs"), (writers, "coco_results", "write COCO JSON"),
        (writers, "write_coco_json", "write COCO JSON"), (writers, "kaggle_rows", "write Kaggle CSV"),
        (writers, "write_kaggle_csv", "write Kaggle CSV"), (batch, "write_image_outputs", "other"),
    ]:
        timer.wrap(owner, attribute, stage)
    try:
        with tempfile.TemporaryDirectory() as out:
            predict_files(predictor, files[:1], out, OutputFormats.everything())  # warm-up
            timer.seconds.clear()
            started = time.perf_counter()
            result = predict_files(predictor, files, out, OutputFormats.everything())
            wall = time.perf_counter() - started
    finally:
        timer.restore()
    timer.seconds["other"] = timer.seconds.get("other", 0.0) + wall - sum(timer.seconds.values())
    return {"wall_s": wall, "stages_s": timer.seconds, "images": result.images, "objects": result.objects}


def main_profile(args, predictor, files) -> int:
    megapixels = sum(np.prod(load_image_array(f).shape[:2]) for f in files) / 1e6
    common.log(f"profiling {len(files)} image(s), {megapixels:.2f} MP")
    found = profile_stages(predictor, files)
    wall = found["wall_s"]
    rows = sorted(found["stages_s"].items(), key=lambda item: -item[1])
    table = common.markdown_table(["stage", "seconds", "share", "s / MP"],
                                  [[stage, f"{s:.2f}", f"{100 * s / wall:.1f}%", f"{s / megapixels:.3f}"] for stage, s in rows])
    md = "\n".join([
        common.header("Where prediction time goes", common.machine_info(args.device)),
        f"Model: {predictor.model_name or predictor.weights} on {args.device}, {torch.get_num_threads()} torch "
        f"thread(s); {found['images']} image(s), {megapixels:.2f} MP of files, {found['objects']} nuclei; one pass "
        "after a warm-up image, every output format written.\n",
        table + "\n",
        f"All stages: {wall:.2f} s, {wall / megapixels:.2f} s per megapixel.\n",
    ])
    print(md)
    payload = {"args": vars(args), "machine": common.machine_info(args.device), "megapixels": megapixels, **found,
               "s_per_megapixel": wall / megapixels}
    common.write_outputs(args.output_dir, "predict_profile", payload, md)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    common.quiet()
    threads = common.set_threads(args.threads)
    files, problems = expand_inputs(args.images)
    for problem in problems + ([] if files else ["no images to time"]):
        print(f"error: {problem}", file=sys.stderr)
    if not files:
        return 1
    try:
        predictor = load_predictor(args)
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.profile:
        return main_profile(args, predictor, files)
    model_name = predictor.model_name or predictor.weights
    rss_model = peak_rss_mib()
    info = common.machine_info(args.device)
    rows = measure(predictor, files, args.repeats)
    total_s, total_mp = sum(r["median_s"] for r in rows), sum(r["megapixels"] for r in rows)
    table = common.markdown_table(
        ["image", "size (px)", "MP", "model scale", "tiles", "nuclei", "median s", "s / MP", "peak RSS (MiB)"],
        [[r["image"], f"{r['width']} x {r['height']}", f"{r['megapixels']:.2f}", f"{r['scale']:.2f}", r["tiles"],
          r["objects"], f"{r['median_s']:.2f}", f"{r['s_per_megapixel']:.2f}", f"{r['peak_rss_mib']:.0f}"] for r in rows])
    md = "\n".join([
        common.header("Prediction speed and memory", info),
        f"Model: {model_name} on {args.device}, {threads} torch thread(s); median of {args.repeats} run(s) per image "
        f"after a warm-up; seconds per megapixel of the file.\n",
        table + "\n",
        f"All images: {total_s / total_mp:.2f} s per megapixel ({total_s:.2f} s for {total_mp:.2f} MP); peak RSS "
        f"{rows[-1]['peak_rss_mib']:.0f} MiB, of which {rss_model:.0f} MiB after loading the model.\n",
    ])
    print(md)
    payload = {"args": vars(args), "machine": info, "model": model_name, "rows": rows,
               "s_per_megapixel": total_s / total_mp, "rss_after_model_load_mib": rss_model,
               "peak_rss_mib": rows[-1]["peak_rss_mib"]}
    common.write_outputs(args.output_dir, "predict_speed", payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
