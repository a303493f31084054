#!/usr/bin/env python
"""StarDist 2D as a peer of sharp_fpn: train from random weights on a converter's COCO JSON for a
wall-clock budget, and predict label images.

    $PEER_ENVS/stardist/bin/python benchmarks/peers/stardist_peer.py train ann/train.json \
        --budget-minutes 80 --model-dir $HOME/peer_models/stardist
    $PEER_ENVS/stardist/bin/python benchmarks/peers/stardist_peer.py predict --coco-json ann/val.json \
        --model-dir $HOME/peer_models/stardist --output-dir $HOME/peer_labels/stardist

Runs in the environment made by ``benchmarks/peers/setup.sh stardist`` (stardist 0.9.2, csbdeep
0.8.2, tensorflow-cpu 2.15.1). StarDist's documented practice, from its README and its 2-D
example notebooks (training, prediction), is followed where it gives one:

- Config2D defaults except those the notebooks set: ``n_rays=32``, ``grid=(2, 2)``, and
  ``n_channel_in=3`` because every image is read as RGB (alpha dropped, grey repeated), so that
  fluorescence, brightfield and stained tissue are all seen, as sharp_fpn sees them.
- Images are normalised with csbdeep's percentile ``normalize(x, 1, 99.8)``, jointly over the
  three channels (the notebooks' choice for colour images; for grey-as-RGB it is the same as per
  channel). Label holes are filled (``fill_label_holes``), as in the notebooks.
- A tenth of the training images is held back (seeded): it is Keras' validation data during
  training and the data of ``optimize_thresholds`` afterwards (prob and NMS thresholds, saved in
  thresholds.json and used by ``predict``).
- Augmentation: random 90-degree rotations, flips and an intensity scale/shift (x * U(0.6, 2) +
  U(-0.2, 0.2)), as the training notebook does; the library itself augments nothing by default.
- Loss, optimiser (Adam, 3e-4), batch size 4, 256x256 patches, 100 steps per epoch and the
  learning-rate schedule are Config2D's defaults.

Changed, and why:

- Epochs: Config2D's 400 epochs are an upper bound; training stops when the wall-clock budget
  (counted from the start of the command) is reached, mid-epoch if need be, so that every peer
  and sharp_fpn get the same minutes. The last epoch's validation pass is kept inside the
  budget (training stops early by the duration of the previous one; the first pass, which also
  builds TensorFlow's graph, can run past a budget that ends in the first epoch). StarDist's own
  checkpoints are kept: weights_best.h5 (best validation loss, which StarDist loads at the end
  of training, and which ``predict`` uses) and weights_now.h5 after every epoch, and
  weights_last.h5 at the end.
- The patch size is 256x256 unless a training image is smaller; then the largest multiple of 16
  that fits every image.
- Predicted objects get StarDist's object probability as their score (``<name>_objects.csv``), so
  that COCO AP can rank them; the label image itself is StarDist's output unchanged.
"""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

N_RAYS = 32
GRID = (2, 2)
PATCH = 256
PATCH_MULTIPLE = 16  # 2**unet_n_depth (3) * grid (2)
NORM_PERCENTILES = (1.0, 99.8)
DEFAULT_HOLDOUT = 0.1
MODEL_MARKER = "config.json"


def parse_args(argv=None):
    parser, train, predict = pc.build_parser(__doc__, "StarDist 2D")
    train.add_argument("--holdout", type=pc.fraction, default=DEFAULT_HOLDOUT,
                       help="share of the training images held back for validation and threshold optimisation (default 0.1)")
    train.add_argument("--max-epochs", type=int, default=400, help="upper bound on epochs, Config2D's train_epochs (default 400)")
    train.add_argument("--steps-per-epoch", type=int, default=100, help="Config2D's train_steps_per_epoch (default 100)")
    return pc.parse(parser, argv)


def set_threads(threads: int) -> None:
    """TensorFlow's CPU threads; must run before TensorFlow starts its thread pools."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def quiet(verbose: bool) -> None:
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("stardist", "csbdeep", "tensorflow-cpu", "numpy")}


def normalized(image: np.ndarray) -> np.ndarray:
    from csbdeep.utils import normalize

    return normalize(image, *NORM_PERCENTILES, axis=(0, 1, 2))


def augment(x: np.ndarray, y: np.ndarray):
    """A random dihedral transform of image and labels alike, then an intensity change of the
    image alone (StarDist's training notebook does the same two steps)."""
    turns = np.random.randint(4)
    x, y = np.rot90(x, turns, axes=(0, 1)), np.rot90(y, turns, axes=(0, 1))
    for axis in (0, 1):
        if np.random.rand() < 0.5:
            x, y = np.flip(x, axis), np.flip(y, axis)
    x = x * np.random.uniform(0.6, 2.0) + np.random.uniform(-0.2, 0.2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def patch_size(images) -> tuple:
    """256x256, or the largest multiple of 16 that fits the smallest image."""
    height = min(im.shape[0] for im in images)
    width = min(im.shape[1] for im in images)
    size = tuple(min(PATCH, side // PATCH_MULTIPLE * PATCH_MULTIPLE) for side in (height, width))
    if min(size) < PATCH_MULTIPLE:
        raise pc.PeerError(f"an image of {height}x{width} px is too small for StarDist's network (at least 16 px a side)")
    return size


def deadline_callback(deadline: pc.Deadline):
    """A Keras callback that stops fitting once the budget minus the last validation pass's
    duration is spent (Keras 2 checks ``stop_training`` after every batch)."""
    from csbdeep.utils.tf import keras_import

    Callback = keras_import("callbacks", "Callback")

    class StopAtDeadline(Callback):
        def __init__(self):
            super().__init__()
            self.validation_s, self.steps, self.stopped_at = 0.0, 0, None
            self._validation_start = None

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if deadline.remaining() <= self.validation_s and not self.model.stop_training:
                self.model.stop_training = True
                self.stopped_at = deadline.elapsed()

        def on_test_begin(self, logs=None):
            self._validation_start = time.monotonic()

        def on_test_end(self, logs=None):
            self.validation_s = time.monotonic() - self._validation_start

    return StopAtDeadline()


def train(args):
    deadline = pc.fitting_deadline(args)
    quiet(args.verbose)
    set_threads(args.threads)
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    model_dir = pc.fresh_model_dir(args.model_dir, MODEL_MARKER, create=False)
    random.seed(args.seed)
    np.random.seed(args.seed)
    import tensorflow as tf

    tf.random.set_seed(args.seed)

    samples = pc.load_coco_samples(args.train_json, args.image_root, args.limit_images, pc.log)
    train_idx, held_idx = pc.holdout_split(len(samples), args.holdout, args.seed)
    if not held_idx:
        raise pc.PeerError("StarDist needs at least 2 images: one is held back for its thresholds")
    X = [normalized(s.image) for s in samples]
    Y = [fill_label_holes(s.labels) for s in samples]
    patch = patch_size(X)
    config = Config2D(n_rays=N_RAYS, grid=GRID, n_channel_in=3, use_gpu=False, train_patch_size=patch,
                      train_epochs=args.max_epochs, train_steps_per_epoch=args.steps_per_epoch)
    model = StarDist2D(config, name=model_dir.name, basedir=str(model_dir.parent))
    model.prepare_for_training()
    stopper = deadline_callback(deadline)
    model.callbacks.append(stopper)
    prepared_s = deadline.elapsed()
    pc.log(f"StarDist: {len(train_idx)} training images, {len(held_idx)} held back, patches {patch}, "
           f"{deadline.remaining() / 60:.1f} of {args.budget_minutes:g} minutes left for fitting")
    history = model.train([X[i] for i in train_idx], [Y[i] for i in train_idx],
                          validation_data=([X[i] for i in held_idx], [Y[i] for i in held_idx]),
                          augmenter=augment, epochs=args.max_epochs, steps_per_epoch=args.steps_per_epoch)
    fit_s = deadline.elapsed()

    started = time.monotonic()
    thresholds = model.optimize_thresholds([X[i] for i in held_idx], [Y[i] for i in held_idx])
    thresholds_s = time.monotonic() - started
    losses = {k: [float(v) for v in values] for k, values in history.history.items() if k in ("loss", "val_loss")}
    summary = {
        "peer": "stardist", "versions": versions(), "threads": args.threads or os.cpu_count(), **pc.machine(),
        "train_json": str(Path(args.train_json).resolve()), "budget_minutes": args.budget_minutes,
        "calibration_minutes_kept": args.calibration_minutes,
        "images": {"train": len(train_idx), "held_back": len(held_idx),
                   "held_back_ids": [samples[i].image_id for i in held_idx]},
        "config": {"n_rays": N_RAYS, "grid": list(GRID), "n_channel_in": 3, "train_patch_size": list(patch),
                   "train_batch_size": config.train_batch_size, "train_learning_rate": config.train_learning_rate,
                   "steps_per_epoch": args.steps_per_epoch, "max_epochs": args.max_epochs},
        "normalisation": f"csbdeep normalize {NORM_PERCENTILES[0]}-{NORM_PERCENTILES[1]} percentiles, channels jointly",
        "seconds": {"data_and_setup": prepared_s, "fitting_incl_setup": fit_s, "optimize_thresholds": thresholds_s},
        "epochs_run": len(losses.get("loss", [])), "steps_run": stopper.steps,
        "stopped_by_budget": stopper.stopped_at is not None,
        "weights_used_by_predict": "weights_best.h5 (lowest val_loss)", "thresholds": thresholds, "history": losses,
    }
    return [pc.write_json(model_dir / pc.TRAIN_SUMMARY_NAME, summary), model_dir / "weights_best.h5",
            model_dir / "thresholds.json"]


def object_scores(details: dict, labels: np.ndarray) -> dict:
    """Label k -> StarDist's probability of the k-th polygon (its label images number the
    polygons 1..n in the order of ``details``)."""
    probabilities = np.asarray(details.get("prob", []), dtype=float)
    present = np.unique(labels)
    return {int(k): float(probabilities[k - 1]) for k in present[present > 0] if k - 1 < len(probabilities)}


def predict(args):
    files = pc.predict_inputs(args)
    model_dir = Path(args.model_dir)
    if not (model_dir / MODEL_MARKER).is_file():
        raise pc.PeerError(f"{model_dir}: no StarDist model ({MODEL_MARKER}); make one with the train command")
    quiet(args.verbose)
    set_threads(args.threads)
    from stardist.models import StarDist2D

    model = StarDist2D(None, name=model_dir.name, basedir=str(model_dir.parent))
    output_dir = Path(args.output_dir)
    timings = pc.Timings("stardist", versions(), args.threads or os.cpu_count(), [])
    written = []
    for index, file in enumerate(files):
        image = pc.read_rgb(file)
        if index == 0:
            model.predict_instances(normalized(image))  # warm-up: first-call costs are not per image
        started = time.perf_counter()
        labels, details = model.predict_instances(normalized(image))
        seconds = time.perf_counter() - started
        scores = object_scores(details, labels)
        timings.add(pc.image_name(file), image.shape, seconds, len(scores))
        written += pc.write_label_outputs(output_dir, pc.image_name(file), labels, scores, str(file))
        pc.log(f"{index + 1}/{len(files)} {file.name}: {len(scores)} nuclei, {seconds:.2f} s")
    payload = timings.payload()
    payload["thresholds"] = {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}
    pc.log(f"{len(files)} images, {payload['seconds']:.1f} s, {payload['s_per_megapixel']:.2f} s/MP")
    return [pc.write_json(output_dir / pc.TIMINGS_NAME, payload), f"{len(written) // 2} label images to {output_dir}"]


def main(argv=None) -> int:
    args = parse_args(argv)
    return pc.run(train if args.command == "train" else predict, args)


if __name__ == "__main__":
    sys.exit(main())
