#!/usr/bin/env python
"""Cellpose 3 as a peer of sharp_fpn: train from random weights on a converter's COCO JSON for a
wall-clock budget, and predict label images.

    $PEER_ENVS/cellpose/bin/python benchmarks/peers/cellpose_peer.py train ann/train.json \
        --budget-minutes 80 --model-dir $HOME/peer_models/cellpose
    $PEER_ENVS/cellpose/bin/python benchmarks/peers/cellpose_peer.py predict --coco-json ann/val.json \
        --model-dir $HOME/peer_models/cellpose --output-dir $HOME/peer_labels/cellpose

Runs in the environment made by ``benchmarks/peers/setup.sh cellpose`` (cellpose 3.1.1.x on a
CPU build of PyTorch). What Cellpose documents is followed where it gives a value:

- Training is ``cellpose.train.train_seg`` with the settings of Cellpose's own training command
  (``python -m cellpose --train``): SGD, learning rate 0.2, momentum 0.9, weight decay 1e-5,
  batch size 8, 224x224 crops, ``min_train_masks`` 5, and train_seg's learning-rate schedule
  (a linear warm-up over 10 epochs, then constant, then ten halvings over the last 50 epochs of
  runs over 100 epochs, or the last 100 of runs over 300). From random weights
  (``pretrained_model=False``).
- Channels ``[0, 0]``: one grey channel, the mean of R, G and B, as Cellpose does for nuclei in
  any RGB image; every image is read as RGB (alpha dropped), so all image kinds are trained on.
- Normalisation is Cellpose's own (``normalize=True``: 1st-99th percentile per image). Flow
  threshold 0.4 and cell-probability threshold 0.0 at prediction, Cellpose's defaults.
- Diameter: Cellpose rescales training images so that their mean nucleus diameter becomes
  ``diam_mean``; 17 px, the value of Cellpose's own nuclei model (its docs: the model zoo was
  trained at 30, "except the nuclei model which used a diameter of 17 pixels"; for training from
  scratch it is free). After fitting, Cellpose's size model is trained from scratch on the same
  images (``train.train_size``: a linear regression from the network's style vector to the
  log diameter, 10 epochs); ``predict`` then estimates each image's diameter as Cellpose's
  ``Cellpose.eval`` does (``SizeModel.eval``: style regression, then the median diameter of a
  first segmentation at that size) and segments at it.

Changed, and why:

- Epochs: Cellpose's command line trains 500 epochs of all training images; here the run is
  fitted to the wall-clock budget so that every tool gets the same minutes and train_seg's own
  schedule fits inside it. On a CPU a batch takes many seconds (about 18 s for 8 crops on two
  loaded cores in a smoke run), so 80 minutes hold a few hundred batches: a few epochs of all
  480 images, which would end inside the 10-epoch warm-up, at a fraction of the learning rate.
  So an epoch is made of as many images as cut the budget into about 250 epochs (at least one
  batch, at most all images; ``--nimg-per-epoch`` sets it), drawn at random each epoch as
  train_seg does whenever an epoch is not all images; the schedule then has the proportions of
  Cellpose's 500-epoch default: warm-up, a long constant stretch, halvings over the end. The
  seconds per batch are measured on a throwaway copy of the network for a few batches, and the
  epochs that fit in what is left of the budget are trained. Should an epoch run slower than measured,
  training stops at the deadline all the same and the network is saved as it is
  (``stopped_by_budget`` in train_summary.json). Checkpoints: train_seg's own saves, about ten
  per run instead of every 100 epochs.
- The size model sees 64 randomly drawn images per epoch (``--size-nimg-per-epoch``) instead of
  all of them: its 10 epochs are 10 forward passes of the network at 512x512 per image, over
  an hour for 480 images on two CPU cores by the pace of a smoke run (a second or more per
  pass), while 640 style vectors already over-determine its linear regression (256
  coefficients, L2-regularised). Its time is in train_summary.json; ``--calibration-minutes``
  keeps room for it inside the budget.
- Flows are computed once before fitting (train_seg would do the same at its start), so that
  the time they take is known before the epochs are fitted to the budget.
- Objects get a score for COCO AP, which Cellpose does not give: the mean cell probability
  (sigmoid of the network's cell-probability output) over the object's pixels. The label image
  is Cellpose's output unchanged.
- ``--invert-bright`` (off by default) inverts grey images with a bright background
  (brightfield, by sharp_fpn's image-kind rule) at training and prediction, so that nuclei are
  always bright; it is recorded with the model and applied by ``predict``. Cellpose's own
  ``invert`` option inverts every image alike, which does not fit a mix of kinds.
"""
from __future__ import annotations

import copy
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

CHANNELS = [0, 0]
DIAM_MEAN = 17.0
BATCH_SIZE = 8
FLOW_THRESHOLD = 0.4
CELLPROB_THRESHOLD = 0.0
MIN_TRAIN_MASKS = 5
OPTIMISERS = {"sgd": (True, 0.2), "adamw": (False, 0.005)}  # Cellpose's CLI default, train_seg's default
MODEL_NAME = "cellpose_model"
MODEL_MARKER = "models/" + MODEL_NAME
PROBE_STEPS = 3  # batches timed on a throwaway copy of the network (the first is a warm-up)
BUDGET_MARGIN = 0.97  # share of the remaining budget given to the fitted epochs
TARGET_EPOCHS = 250  # epochs the budget is cut into unless --nimg-per-epoch is given; see the module doc
SIZE_NIMG_PER_EPOCH = 64  # images per epoch of the size model (Cellpose: all); see the module doc


def parse_args(argv=None):
    parser, train, predict = pc.build_parser(__doc__, "Cellpose 3")
    train.add_argument("--optimizer", choices=sorted(OPTIMISERS), default="sgd",
                       help="sgd: Cellpose's command-line default (lr 0.2); adamw: train_seg's Python default (lr 0.005) "
                            "(default sgd)")
    train.add_argument("--learning-rate", type=pc.positive_float, help="override the optimiser's default learning rate")
    train.add_argument("--nimg-per-epoch", type=int,
                       help=f"images per epoch (default: as many as cut the budget into about {TARGET_EPOCHS} epochs, "
                            "at most all images, Cellpose's default; see the module doc)")
    train.add_argument("--size-nimg-per-epoch", type=int, default=SIZE_NIMG_PER_EPOCH,
                       help="images per epoch of the size model's 10 epochs; 0: all, Cellpose's default "
                            f"(default {SIZE_NIMG_PER_EPOCH}: see the module doc)")
    train.add_argument("--invert-bright", action="store_true",
                       help="invert grey images with a bright background so nuclei are bright (default off)")
    return pc.parse(parser, argv)


def setup(threads: int, verbose: bool):
    import torch

    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    return torch


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("cellpose", "torch", "numpy")}


def model_input(image: np.ndarray, invert_bright: bool) -> np.ndarray:
    """The image as the network gets it (before Cellpose's own grey conversion and normalisation)."""
    return pc.invert(image) if invert_bright and pc.is_bright_background(image) else image


class BudgetReached(Exception):
    pass


class BatchClock:
    """Wraps ``transforms.random_rotate_and_resize``, which train_seg calls once per batch: keeps
    the time of each call and raises BudgetReached once the deadline has passed."""

    def __init__(self, transforms, deadline: pc.Deadline | None):
        self.transforms, self.original, self.deadline = transforms, transforms.random_rotate_and_resize, deadline
        self.times: list[float] = []

    def __enter__(self):
        def timed(*args, **kwargs):
            if self.deadline is not None and self.deadline.passed():
                raise BudgetReached
            self.times.append(time.monotonic())
            return self.original(*args, **kwargs)

        self.transforms.random_rotate_and_resize = timed
        return self

    def __exit__(self, *exc):
        self.transforms.random_rotate_and_resize = self.original
        return False


def images_per_epoch(remaining_s: float, step_s: float, target_epochs: int = TARGET_EPOCHS) -> int:
    """Images per epoch (whole batches, at least one) that cut the batches fitting in
    ``remaining_s`` into about ``target_epochs`` epochs."""
    batches = remaining_s * BUDGET_MARGIN / max(step_s, 1e-9)
    return BATCH_SIZE * max(1, int(round(batches / target_epochs)))


def epochs_for(remaining_s: float, step_s: float, steps_per_epoch: int) -> int:
    """Epochs of ``steps_per_epoch`` batches of ``step_s`` seconds that fit in the share
    BUDGET_MARGIN of ``remaining_s`` (at least 1)."""
    return max(1, int(remaining_s * BUDGET_MARGIN // max(step_s * steps_per_epoch, 1e-9)))


def train(args):
    deadline = pc.fitting_deadline(args)
    torch = setup(args.threads, args.verbose)
    from cellpose import dynamics, models, train as cp_train

    model_dir = pc.fresh_model_dir(args.model_dir, MODEL_MARKER)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    sgd, default_lr = OPTIMISERS[args.optimizer]
    learning_rate = args.learning_rate or default_lr

    samples = pc.load_coco_samples(args.train_json, args.image_root, args.limit_images, pc.log)
    images = [model_input(s.image, args.invert_bright) for s in samples]
    model = models.CellposeModel(gpu=False, pretrained_model=False, diam_mean=DIAM_MEAN, nchan=2)
    started = time.monotonic()
    flows = dynamics.labels_to_flows([s.labels for s in samples], device=model.device)
    flows_s = time.monotonic() - started
    kept = sum(int(f[0].max()) >= MIN_TRAIN_MASKS for f in flows)
    options = dict(channels=CHANNELS, channel_axis=2, normalize=True, batch_size=BATCH_SIZE, SGD=sgd,
                   learning_rate=learning_rate, weight_decay=1e-5, momentum=0.9, min_train_masks=MIN_TRAIN_MASKS)

    # Seconds per batch, on a throwaway copy of the network and a few images.
    probe = min(len(images), 2 * BATCH_SIZE)
    with tempfile.TemporaryDirectory() as scratch, BatchClock(cp_train.transforms, None) as clock:
        cp_train.train_seg(copy.deepcopy(model.net), images[:probe], flows[:probe], n_epochs=1,
                           nimg_per_epoch=PROBE_STEPS * BATCH_SIZE, save_path=scratch, model_name="probe",
                           **{**options, "min_train_masks": 0})
        step_s = float(np.median(np.diff(clock.times)[1:]))  # the first batch is a warm-up
    nimg_per_epoch = min(kept, args.nimg_per_epoch or images_per_epoch(deadline.remaining(), step_s))
    steps_per_epoch = -(-nimg_per_epoch // BATCH_SIZE)
    n_epochs = epochs_for(deadline.remaining(), step_s, steps_per_epoch)
    save_every = max(1, min(100, n_epochs // 10))
    pc.log(f"Cellpose: {kept} of {len(images)} images with >= {MIN_TRAIN_MASKS} nuclei, {nimg_per_epoch} per epoch "
           f"({steps_per_epoch} batches of {BATCH_SIZE}); {step_s:.2f} s a batch; {n_epochs} epochs fit in the "
           f"{deadline.remaining() / 60:.1f} minutes left")
    stopped = False
    fit_started = time.monotonic()
    with BatchClock(cp_train.transforms, deadline) as clock:
        try:
            model_path = cp_train.train_seg(model.net, images, flows, n_epochs=n_epochs, nimg_per_epoch=nimg_per_epoch,
                                            save_path=str(model_dir), save_every=save_every, model_name=MODEL_NAME,
                                            **options)[0]
        except BudgetReached:
            stopped = True
            model_path = model_dir / MODEL_MARKER
            model.net.save_model(str(model_path))
    fitting_s, fit_s = time.monotonic() - fit_started, deadline.elapsed()
    batches = len(clock.times)

    started = time.monotonic()
    model.pretrained_model = str(model_path)
    cp_train.train_size(model.net, str(model_path), images, flows, channels=CHANNELS, channel_axis=2, normalize=True,
                        batch_size=BATCH_SIZE, nimg_per_epoch=args.size_nimg_per_epoch or None,
                        min_train_masks=MIN_TRAIN_MASKS)
    size_s = time.monotonic() - started
    summary = {
        "peer": "cellpose", "versions": versions(), "threads": torch.get_num_threads(), **pc.machine(),
        "train_json": str(Path(args.train_json).resolve()), "budget_minutes": args.budget_minutes,
        "calibration_minutes_kept": args.calibration_minutes,
        "images": {"train": len(images), "with_enough_nuclei": kept, "per_epoch": nimg_per_epoch},
        "settings": {"channels": CHANNELS, "diam_mean": DIAM_MEAN, "optimizer": args.optimizer, "learning_rate": learning_rate,
                     "batch_size": BATCH_SIZE, "weight_decay": 1e-5, "momentum": 0.9, "n_epochs": n_epochs,
                     "save_every": save_every, "invert_bright": args.invert_bright,
                     "size_nimg_per_epoch": args.size_nimg_per_epoch or "all",
                     "flow_threshold": FLOW_THRESHOLD, "cellprob_threshold": CELLPROB_THRESHOLD},
        "seconds": {"flows": flows_s, "probe_seconds_per_batch": step_s, "fitting": fitting_s,
                    "fitting_incl_setup": fit_s, "size_model": size_s},
        "batches_run": batches, "stopped_by_budget": stopped,
        "diam_labels": float(model.net.diam_labels.item()),
        "model": str(model_path), "size_model": str(model_path) + "_size.npy",
    }
    return [pc.write_json(model_dir / pc.TRAIN_SUMMARY_NAME, summary), model_path, Path(str(model_path) + "_size.npy")]


def object_scores(labels: np.ndarray, cellprob: np.ndarray) -> dict:
    """Label k -> mean sigmoid of the cell-probability output over its pixels."""
    if labels.max() == 0:
        return {}
    probability = 1.0 / (1.0 + np.exp(-np.asarray(cellprob, dtype=np.float64)))
    flat = labels.ravel().astype(np.int64)
    sums = np.bincount(flat, weights=probability.ravel(), minlength=int(labels.max()) + 1)
    counts = np.bincount(flat, minlength=int(labels.max()) + 1)
    return {int(k): float(sums[k] / counts[k]) for k in np.flatnonzero(counts) if k > 0}


def predict(args):
    files = pc.predict_inputs(args)
    model_dir = Path(args.model_dir)
    weights = model_dir / MODEL_MARKER
    if not weights.is_file():
        raise pc.PeerError(f"{model_dir}: no Cellpose model ({MODEL_MARKER}); make one with the train command")
    torch = setup(args.threads, args.verbose)
    from cellpose import models

    summary_path = model_dir / pc.TRAIN_SUMMARY_NAME
    settings = pc.read_json(summary_path, coco=False).get("settings", {}) if summary_path.is_file() else {}
    invert_bright = bool(settings.get("invert_bright", False))
    model = models.CellposeModel(gpu=False, pretrained_model=str(weights))
    size_path = Path(str(weights) + "_size.npy")
    size_model = models.SizeModel(model, pretrained_size=str(size_path)) if size_path.is_file() else None
    if size_model is None:
        pc.log(f"warning: {size_path} missing: every image is segmented at the training images' mean diameter")

    def segment(image):
        x = model_input(image, invert_bright)
        diameter = size_model.eval(x, channels=CHANNELS, channel_axis=2)[0] if size_model else float(model.diam_labels)
        masks, flows, _ = model.eval(x, channels=CHANNELS, channel_axis=2, diameter=diameter,
                                     flow_threshold=FLOW_THRESHOLD, cellprob_threshold=CELLPROB_THRESHOLD)
        return masks, flows[2], float(diameter)

    output_dir = Path(args.output_dir)
    timings = pc.Timings("cellpose", versions(), torch.get_num_threads(), [])
    written = []
    for index, file in enumerate(files):
        image = pc.read_rgb(file)
        if index == 0:
            segment(image)  # warm-up: first-call costs are not per image
        started = time.perf_counter()
        labels, cellprob, diameter = segment(image)
        seconds = time.perf_counter() - started
        scores = object_scores(labels, cellprob)
        timings.add(pc.image_name(file), image.shape, seconds, len(scores))
        timings.rows[-1]["diameter"] = diameter
        written += pc.write_label_outputs(output_dir, pc.image_name(file), labels, scores, str(file))
        pc.log(f"{index + 1}/{len(files)} {file.name}: {len(scores)} nuclei at diameter {diameter:.1f}, {seconds:.2f} s")
    payload = timings.payload()
    payload["settings"] = {"invert_bright": invert_bright, "size_model": size_model is not None,
                           "flow_threshold": FLOW_THRESHOLD, "cellprob_threshold": CELLPROB_THRESHOLD}
    pc.log(f"{len(files)} images, {payload['seconds']:.1f} s, {payload['s_per_megapixel']:.2f} s/MP")
    return [pc.write_json(output_dir / pc.TIMINGS_NAME, payload), f"{len(written) // 2} label images to {output_dir}"]


def main(argv=None) -> int:
    args = parse_args(argv)
    return pc.run(train if args.command == "train" else predict, args)


if __name__ == "__main__":
    sys.exit(main())
