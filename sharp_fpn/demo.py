"""The end-to-end CPU demo: synthetic nuclei -> COCO JSON -> train the UNet# neck -> evaluate
-> predict. No download, no GPU; the README's first command.
"""
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


def run_demo(output_dir="demo_output", num_images=30, max_iter=None, seed=0, opts=()):
    """Run the whole demo; return {"untrained": metrics, "trained": metrics, "paths": ...}."""
    output_dir = Path(output_dir)
    setup_logger(name="sharp_fpn")
    setup_logger(name="detectron2")
    started = time.perf_counter()
    annotations = make_demo_data(output_dir / "data", num_images, seed)
    cfg = get_sharp_cfg(DEMO_CONFIG, ["OUTPUT_DIR", str(output_dir / "train"), "SEED", str(seed), *opts])
    if max_iter:
        cfg.SOLVER.MAX_ITER = max_iter
        cfg.SOLVER.STEPS = (int(max_iter * 0.75), int(max_iter * 0.95))
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

    summary = {
        "untrained": _flatten(untrained),
        "trained": _flatten(trained),
        "iterations": cfg.SOLVER.MAX_ITER,
        "seconds": round(time.perf_counter() - started, 1),
        "paths": {
            "data": str(output_dir / "data"),
            "annotations": str(annotations),
            "weights": str(Path(cfg.OUTPUT_DIR) / "model_final.pth"),
            "config": str(Path(cfg.OUTPUT_DIR) / "config.yaml"),
            "metrics": str(Path(cfg.OUTPUT_DIR) / "inference"),
            "predictions": str(predictions),
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


def format_summary(summary) -> str:
    """A markdown table of the metrics before and after training, then where things went."""
    lines = ["| metric | untrained | trained |", "|---|---|---|"]
    for key in summary["trained"]:
        lines.append(f"| {key} | {summary['untrained'][key]:.3f} | {summary['trained'][key]:.3f} |")
    lines.append("")
    lines.append(f"{summary['iterations']} iterations, {summary['seconds']:.0f} s in all.")
    lines += [f"{name:12s} {path}" for name, path in summary["paths"].items()]
    return "\n".join(lines)
