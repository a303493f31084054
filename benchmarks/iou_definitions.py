#!/usr/bin/env python
"""The IoU definition study (issue 14): the definitions of "IoU" in use in this literature,
computed on the same predictions of the seed's Table 1 models.

Each run trains with unet_reproduce.py's protocol (shorter: 30 epochs by default), keeps its
validation predictions (probabilities and ground truth, in evaluation order) as
predictions/<run>.npz, and scores them under every definition of sharp_fpn.unet.metrics, plus
the per-batch pooling at batch 16 (pytorch-nested-unet's default batch and ours). What matters
is how far apart the definitions lie on one set of predictions, and which, if any, comes near
the seed's numbers. --from-predictions recomputes the table from kept predictions.

    python benchmarks/iou_definitions.py --data output/cache/dsb2018_semantic_96px_<hash>.npz \\
        --epochs 30 --device cuda --amp --out output/iou_definitions
    python benchmarks/iou_definitions.py --from-predictions output/iou_definitions --out output/iou_definitions

Writes iou_definitions.json (fractions) and iou_definitions.md (percent, beside the seed's).
"""
import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import unet_reproduce  # noqa: E402  (also makes sharp_fpn.unet importable without Detectron2)
from sharp_fpn.unet.augment import normalize  # noqa: E402
from sharp_fpn.unet.metrics import SEED_BATCH_SIZE, ForegroundScores, iou_batch_pooled  # noqa: E402
from sharp_fpn.unet.supervision import combine_heads  # noqa: E402

NESTED_UNET_BATCH_SIZE = 16  # pytorch-nested-unet's default batch (and unet_reproduce.py's)

# Column -> what it computes; the order of the table.
DEFINITIONS = {
    "iou": "binary, per image, mean over images",
    "iou_pooled": "binary, pooled over the set",
    f"iou_batch{SEED_BATCH_SIZE}": f"binary, pooled per batch of {SEED_BATCH_SIZE} (the seed's), mean over batches",
    f"iou_batch{NESTED_UNET_BATCH_SIZE}": f"binary, pooled per batch of {NESTED_UNET_BATCH_SIZE}, mean over batches",
    "miou_fg_bg": "two-class mean IoU (foreground, background), pooled",
    "soft_dice": "soft Dice on probabilities (Eq. 4, +1), per image",
    "dice": "binary Dice, per image",
}

# The seed's Dsb2018 IoU (%): Table 1, and Table 2's upper rows for the encoder runs.
SEED_IOU = {
    "unet": 90.15, "wide_unet": 90.27, "unet++": 92.02, "unet++_ds": 91.98, "unet3+": 91.96, "unet3+_ds": 92.15,
    "unet#": 92.53, "unet#_ds": 92.67,
    "unet_VGG16": 90.12, "unet#_VGG16": 92.82, "unet_R101": 91.52, "unet#_R101": 93.56,
}
TABLE1_RUNS = "unet,wide_unet,unet++,unet3+,unet#,unet#_ds"


@torch.no_grad()
def predict(model, images: torch.Tensor, batch_size: int, amp: bool = False) -> torch.Tensor:
    """Accurate-mode foreground probabilities (N, 1, H, W), float32 on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            heads = model(normalize(images[start : start + batch_size] * 255))
        out.append(combine_heads(heads, "accurate").float().cpu())
    return torch.cat(out)


def save_predictions(path: Path, run: str, probabilities: torch.Tensor, masks: torch.Tensor, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, run=run, probabilities=probabilities.numpy().astype(np.float16),
                        masks=masks.numpy().astype(np.uint8), ids=np.array(ids))
    partial.replace(path)


def score(probabilities: torch.Tensor, masks: torch.Tensor) -> Dict[str, float]:
    """Every definition of ``DEFINITIONS`` on one set of predictions (fractions)."""
    scores = ForegroundScores(batch_size=SEED_BATCH_SIZE)
    scores.update(probabilities.float(), masks)
    summary = scores.summary()
    summary[f"iou_batch{NESTED_UNET_BATCH_SIZE}"] = iou_batch_pooled(scores.counts(), NESTED_UNET_BATCH_SIZE)
    return {name: summary[name] for name in DEFINITIONS}


def train_and_keep(args) -> None:
    """Train every run of --runs and keep its validation predictions."""
    data = unet_reproduce.load_data(args.data, args.size, args.cache_dir)
    train, val = data.split(args.val_fraction, args.seed)
    val_images, val_masks = unet_reproduce.to_tensors(val, torch.device(args.device))
    for run in args.runs.split(","):
        record, model = unet_reproduce.train_run(run, args, train, val)
        probabilities = predict(model, val_images, args.batch_size * 4, args.amp)
        stem = unet_reproduce.run_file_stem(run)
        save_predictions(Path(args.out) / "predictions" / f"{stem}.npz", run, probabilities, val_masks.cpu(), val.ids)
        record["command"] = " ".join(sys.argv)
        (Path(args.out) / "runs").mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "runs" / f"{stem}.json").write_text(json.dumps(record, indent=1))


def collect(prediction_dir: Path):
    """{run: (scores, number of images)} from every kept predictions file, in --runs order where known."""
    rows = {}
    for path in sorted(prediction_dir.glob("*.npz")):
        with np.load(path) as kept:
            probabilities = torch.from_numpy(kept["probabilities"].astype(np.float32))
            rows[str(kept["run"])] = (score(probabilities, torch.from_numpy(kept["masks"])), len(probabilities))
    order = {run: k for k, run in enumerate(unet_reproduce.RUNS)}
    return dict(sorted(rows.items(), key=lambda item: order.get(item[0], len(order))))


def markdown(rows, header: str) -> str:
    """The table in percent beside the seed's, and each definition's mean gap to the seed."""
    names = list(DEFINITIONS)
    lines = [header, "", "| run | images | seed IoU | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for run, (scores, images) in rows.items():
        seed = f"{SEED_IOU[run]:.2f}" if run in SEED_IOU else "-"
        lines.append(f"| {run} | {images} | {seed} | " + " | ".join(f"{100 * scores[n]:.2f}" for n in names) + " |")
    compared = [run for run in rows if run in SEED_IOU]
    if compared:
        gaps = [sum(SEED_IOU[r] - 100 * rows[r][0][n] for r in compared) / len(compared) for n in names]
        lines.append("| seed minus ours, mean (points) | | | " + " | ".join(f"{g:+.2f}" for g in gaps) + " |")
    lines += ["", "Definitions (sharp_fpn/unet/metrics.py; binary = probability >= 0.5):", ""]
    lines += [f"- `{name}`: {text}" for name, text in DEFINITIONS.items()]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    unet_reproduce.add_training_args(parser, default_runs=TABLE1_RUNS, default_epochs=30, data_required=False)
    parser.add_argument("--from-predictions", metavar="DIR",
                        help="no training: score the predictions/<run>.npz kept under DIR by an earlier run")
    parser.add_argument("--out", default="output/iou_definitions",
                        help="folder for predictions/, runs/ and the table (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.data or args.from_predictions):
        parser.error("give --data (to train) or --from-predictions DIR")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.from_predictions:
        source = Path(args.from_predictions) / "predictions"
    else:
        unet_reproduce.check_runs(args, "iou_definitions.py")
        torch.backends.cudnn.benchmark = True
        train_and_keep(args)
        source = Path(args.out) / "predictions"
    rows = collect(source)
    if not rows:
        sys.exit(f"iou_definitions.py: no predictions (*.npz) in {source}")
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = " ".join(["python benchmarks/iou_definitions.py", *(sys.argv[1:] if argv is None else argv)])
    table = markdown(rows, f"IoU definitions on the same predictions (%); `{command}`; {date}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "date": date, "predictions": str(source), "definitions": DEFINITIONS,
               "seed_iou_percent": SEED_IOU,
               "runs": {run: {"images": images, **scores} for run, (scores, images) in rows.items()}}
    (out / "iou_definitions.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "iou_definitions.md").write_text(table + "\n")
    print(table)
    print(f"wrote {out / 'iou_definitions.json'} and {out / 'iou_definitions.md'}")


if __name__ == "__main__":
    main()
