"""The end-to-end CPU demo: synthetic nuclei -> COCO JSON -> train the UNet# neck -> evaluate
-> predict; then the shipped model on the real example images. No download, no GPU; the
README's first command.
"""
import csv
import json
import logging
import os
import time
from pathlib import Path

from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from .config import get_sharp_cfg
from .data import convert_dsb2018, make_synthetic_dataset
from .engine import Trainer, register_json_datasets, set_cpu_threads

DEMO_CONFIG = "demo_sharp_R18_cpu.yaml"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
REPORTED = (("segm", "AP50"), ("segm", "AP"), ("nuclei", "dsb_score"), ("nuclei", "f1@0.5"),
            ("nuclei", "fg_iou"), ("nuclei", "fg_dice"))
logger = logging.getLogger("sharp_fpn.demo")


def make_demo_data(root: Path, num_images: int, seed: int = 0) -> Path:
    """Synthetic Dsb2018-layout images converted by the real converter; returns the JSON folder."""
    stage = root / "stage1_train"
    make_synthetic_dataset(stage, num_images=num_images, size=(160, 160), max_size=(224, 224), seed=seed)
    annotations = root / "annotations"
    summary = convert_dsb2018(stage, annotations, val_fraction=0.2, seed=seed)
    logger.info("demo data: %s", summary)
    return annotations


def run_demo(output_dir="demo_output", num_images=30, max_iter=None, seed=0, opts=(), shipped_model="nuclei"):
    """Run the whole demo; return {"untrained": metrics, "trained": metrics, "examples": ...,
    "paths": ...}. ``shipped_model`` (a name or a ShippedModel) predicts the example images."""
    output_dir = Path(output_dir)
    setup_logger(name="sharp_fpn")
    setup_logger(name="detectron2")
    started = time.perf_counter()
    annotations = make_demo_data(output_dir / "data", num_images, seed)
    cfg = get_sharp_cfg(DEMO_CONFIG, ["OUTPUT_DIR", str(output_dir / "train"), "SEED", str(seed), *opts])
    if max_iter:
        cfg.SOLVER.MAX_ITER = max_iter
        # Decay at 75% and 95%; distinct and inside the run, as the scheduler requires.
        cfg.SOLVER.STEPS = tuple(sorted({s for s in (int(max_iter * 0.75), int(max_iter * 0.95)) if 0 < s < max_iter}))
    cfg.SOLVER.CHECKPOINT_PERIOD = cfg.SOLVER.MAX_ITER + 1  # keep model_final.pth only
    cfg.MODEL.DEVICE = "cpu"
    register_json_datasets(cfg, annotations / "train.json", annotations / "val.json", output_dir / "data" / "stage1_train")
    cfg.freeze()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    (Path(cfg.OUTPUT_DIR) / "config.yaml").write_text(cfg.dump())
    set_cpu_threads(cfg)

    seed_all_rng(seed)
    untrained = Trainer.test(cfg, build_model(cfg))
    seed_all_rng(seed)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    trained = Trainer.test(cfg, trainer.model)

    predictions = output_dir / "predictions"
    val_images = [output_dir / "data" / "stage1_train" / img["file_name"]
                  for img in json.loads((annotations / "val.json").read_text())["images"]]
    _predict(cfg, Path(cfg.OUTPUT_DIR) / "model_final.pth", val_images, predictions)
    examples = predict_examples(output_dir / "examples", shipped_model)

    summary = {
        "untrained": _flatten(untrained),
        "trained": _flatten(trained),
        "examples": examples,
        "iterations": cfg.SOLVER.MAX_ITER,
        "seconds": round(time.perf_counter() - started, 1),
        "paths": {
            "data": str(output_dir / "data"),
            "annotations": str(annotations),
            "weights": str(Path(cfg.OUTPUT_DIR) / "model_final.pth"),
            "config": str(Path(cfg.OUTPUT_DIR) / "config.yaml"),
            "metrics": str(Path(cfg.OUTPUT_DIR) / "inference"),
            "predictions": str(predictions),
            "examples": str(output_dir / "examples") if examples["rows"] else None,
        },
    }
    (output_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _flatten(results):
    return {f"{task}/{key}": float(results[task][key]) for task, key in REPORTED}


def _predict(cfg, weights, images, output_dir):
    """Label images and overlays (plus the per-object CSV) for the validation images."""
    from .predict import NucleiPredictor, OutputFormats, predict_files

    predictor = NucleiPredictor(cfg, weights, device="cpu")
    formats = OutputFormats(objects_csv=True)
    result = predict_files(predictor, images, output_dir, formats)
    if result.failures:
        raise RuntimeError("; ".join(result.failures))


def example_counts(folder=EXAMPLES_DIR) -> list:
    """The shipped example images: dicts of file (a Path), kind and nuclei (the ground-truth
    count), from ``counts.csv`` beside them."""
    folder = Path(folder)
    with open(folder / "counts.csv", newline="") as f:
        return [{"file": folder / row["file"], "kind": row["kind"], "nuclei": int(row["nuclei"])}
                for row in csv.DictReader(f)]


def predict_examples(output_dir, shipped_model="nuclei", examples=EXAMPLES_DIR) -> dict:
    """Label images and overlays of the example images by the shipped model, and their
    predicted against their true counts: {"rows": [...], "skipped": None}. When the model's
    weights are not there (or no examples are), {"rows": [], "skipped": why}; a damaged
    weights file is an error."""
    from .predict import NucleiPredictor, OutputFormats, predict_files
    from .predict.pretrained import shipped_model as lookup

    model = lookup(shipped_model)
    if not model.weights_path.is_file():
        why = f"its weights {model.weights_path} are not in this copy of sharp_fpn"
        logger.info("examples: %s; skipped", why)
        return {"rows": [], "skipped": why}
    if not (Path(examples) / "counts.csv").is_file():
        return {"rows": [], "skipped": f"no example images in {examples}"}
    truth = example_counts(examples)
    predictor = NucleiPredictor.from_pretrained(model, device="cpu")
    result = predict_files(predictor, [row["file"] for row in truth], output_dir, OutputFormats(objects_csv=True))
    if result.failures:
        raise RuntimeError("; ".join(result.failures))
    rows = [{"file": row["file"].name, "kind": row["kind"], "true": row["nuclei"],
             "predicted": result.objects_per_image[row["file"].stem]} for row in truth]
    return {"rows": rows, "skipped": None, "model": model.name}


def format_examples(examples) -> list:
    """Lines of the example table (predicted vs true count), or the one line saying why not."""
    if not examples["rows"]:
        return [f"Shipped model on the example images: skipped ({examples['skipped']})."]
    lines = [f"Shipped model {examples['model']!r} on the example images:", "",
             "| example | kind | true count | predicted | difference |", "|---|---|---|---|---|"]
    for row in examples["rows"]:
        change = (row["predicted"] - row["true"]) / row["true"] if row["true"] else 0.0
        lines.append(f"| {row['file']} | {row['kind']} | {row['true']} | {row['predicted']} | {change:+.0%} |")
    return lines


def format_summary(summary) -> str:
    """A markdown table of the metrics before and after training, the example counts, then
    where things went."""
    lines = ["| metric | untrained | trained |", "|---|---|---|"]
    for key in summary["trained"]:
        lines.append(f"| {key} | {summary['untrained'][key]:.3f} | {summary['trained'][key]:.3f} |")
    lines.append("")
    lines.append(f"{summary['iterations']} iterations, {summary['seconds']:.0f} s in all.")
    lines.append("")
    lines += format_examples(summary["examples"])
    lines.append("")
    lines += [f"{name:12s} {path}" for name, path in summary["paths"].items() if path]
    return "\n".join(lines)
