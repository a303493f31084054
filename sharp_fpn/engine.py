"""Training and evaluation for Detectron2's tools: our reader, evaluator and checkpointer.

:class:`Trainer` is Detectron2's DefaultTrainer with only the pieces nuclei need swapped in,
plus CPU multi-process training (DDP with ``device_ids=None``, which Detectron2's
``create_ddp_model`` does not pass), progress at least twice a minute whatever an iteration
costs, and a terminal that shows what a user follows a run by while ``log.txt`` keeps it all.
Everything a run needs is checked before it starts (:func:`load_config`, :func:`check_run`),
so a mistake is one line, not a traceback from deep inside a worker.
"""
import collections
import dataclasses
import difflib
import json
import logging
import os
import re
import sys
import time
import weakref

import torch
import yaml
from detectron2.data import (DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .checkpoint import SharpCheckpointer, WeightsUnavailable, local_weights
from .config import get_sharp_cfg
from .data import DSB2018_DATASETS, NucleiDatasetMapper, register_coco_nuclei
from .data.image_io import read_image
from .data.kinds import kind_repeat_factors, stain
from .evaluation import NucleiEvaluator
from .modeling.tta import with_test_time_flips

logger = logging.getLogger(__name__)

JSON_TRAIN, JSON_TEST = "sharp_fpn_json_train", "sharp_fpn_json_test"
CONVERTER = "datasets/prepare_dsb2018.py"


class SetupError(Exception):
    """A mistake found before a run starts (config, data, weights); the message is one line."""


def load_config(config_file, opts=()):
    """:func:`~sharp_fpn.config.get_sharp_cfg`, with its errors as one-line :class:`SetupError`;
    for a misspelt key (a bare assertion in yacs) it names the closest real keys."""
    try:
        return get_sharp_cfg(config_file, opts)
    except (AssertionError, KeyError, ValueError, OSError, yaml.YAMLError) as error:
        message = " ".join(str(error).strip("'\"").split())
        unknown = re.search(r"Non-existent (?:config )?key: (\S+)", message)
        if unknown:
            key = unknown.group(1)
            known = _config_keys(get_sharp_cfg(None, ["MODEL.DEVICE", "cpu"]))
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.8)
            message = f"no config key {key}" + (f"; did you mean {' or '.join(close)}?" if close else "")
        if str(config_file) not in message:
            message = f"config {config_file}: {message}"
        raise SetupError(message) from error


def _config_keys(node, prefix=""):
    """Every leaf key of a config, dotted (``SOLVER.MAX_ITER``)."""
    keys = []
    for name, value in node.items():
        keys += _config_keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [prefix + name]
    return keys


def register_json_datasets(cfg, train_json=None, test_json=None, image_root=None, *, train_image_root=None,
                           test_image_root=None):
    """Register converted COCO JSONs and point DATASETS.TRAIN / DATASETS.TEST at them.

    Each JSON's ``file_name`` are relative to its own root (``train_image_root`` /
    ``test_image_root``), else ``image_root``, else the stage folder the converter recorded in
    the JSON. Run in every worker: ``launch`` spawns fresh ones.
    """
    parts = ((train_json, train_image_root, JSON_TRAIN, "TRAIN"), (test_json, test_image_root, JSON_TEST, "TEST"))
    for json_file, root, name, key in parts:
        if json_file:
            if not os.path.isfile(json_file):
                raise FileNotFoundError(f"{json_file}: dataset JSON not found")
            register_coco_nuclei(name, json_file, root or image_root)
            cfg.DATASETS[key] = (name,)


def check_run(cfg, eval_only=False, resume=False):
    """Raise :class:`SetupError` for what would otherwise fail after minutes of start-up: a
    dataset that is not there or whose images are not where its JSON says, missing weights,
    test-time flips on a model that has none."""
    if cfg.TEST.AUG.ENABLED and not (cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.MODEL.MASK_ON):
        raise SetupError(f"TEST.AUG.ENABLED (test-time flips) is for Mask R-CNN; this config is a {cfg.MODEL.META_ARCHITECTURE}")
    trainer_class(cfg).register_datasets(cfg)
    for name in (() if eval_only else cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST):
        _check_dataset(name)
    weights = cfg.MODEL.WEIGHTS
    if eval_only and not weights:
        raise SetupError(f"--eval-only needs the weights to evaluate: add MODEL.WEIGHTS {_final(cfg)}")
    resuming = resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    encoder = cfg.MODEL.UNET.ENCODER_WEIGHTS if cfg.MODEL.META_ARCHITECTURE == "SemanticUNet" else ""
    # A URL is fetched here, once, before any process starts; every process then reads the cache.
    for key, path in (("MODEL.WEIGHTS", "" if resuming else weights), ("MODEL.UNET.ENCODER_WEIGHTS", encoder)):
        try:
            local = local_weights(path)
        except WeightsUnavailable as error:
            raise SetupError(f"{key} {error}") from None
        if path and not os.path.isfile(local):
            hint = f" (this config's runs leave {_final(cfg)})" if eval_only and key == "MODEL.WEIGHTS" else ""
            raise SetupError(f"{key} {path}: no such file{hint}")


def _final(cfg):
    return os.path.join(cfg.OUTPUT_DIR, "model_final.pth")


def _check_dataset(name):
    if name not in DatasetCatalog.list():
        raise SetupError(f"dataset {name!r} is not registered; give a converted JSON with --train-json/--test-json")
    metadata = MetadataCatalog.get(name)
    json_file, image_root = metadata.get("json_file"), metadata.get("image_root")
    if not json_file:
        return  # registered from arrays (the UNet family's data), checked when read
    if not os.path.isfile(json_file):
        raise SetupError(f"dataset {name}: {json_file} not found; convert the data first: python {CONVERTER} "
                         f"{image_root} --output-dir {os.path.dirname(json_file)} (or give --train-json/--test-json)")
    if name in (JSON_TRAIN, JSON_TEST):
        flag = "--train-image-root" if name == JSON_TRAIN else "--test-image-root"
        where = f"give the folder its file_name are relative to with --image-root (or {flag})"
    elif name in DSB2018_DATASETS:
        where = "set $SHARP_FPN_DATASETS to the folder that holds dsb2018/"
    else:
        where = "register it with the folder its file_name are relative to"
    first = _first_image(json_file)
    if first and not os.path.isfile(os.path.join(image_root, first)):
        raise SetupError(f"{json_file}: its image {first} is not in {image_root}; {where}")


def _first_image(json_file):
    with open(json_file) as f:
        images = json.load(f).get("images") or [{}]
    return images[0].get("file_name")


class TimedPeriodicWriter(hooks.PeriodicWriter):
    """Detectron2's PeriodicWriter, which writes every ``period`` iterations, also writing once
    ``seconds`` have passed: a CPU iteration of a large model can take a minute, and 20 of them
    without a line look like a hang. With ``first``, also after the first step of a run: that
    line shows at once that every rank joined and a step ran, and metrics.json keeps its loss."""

    def __init__(self, writers, period=20, seconds=30.0, first=False):
        super().__init__(writers, period)
        self._seconds = seconds
        self._first = first
        self._last_write = time.perf_counter()

    def after_step(self):
        now = time.perf_counter()
        due = (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1
        due = due or (self._first and self.trainer.iter == self.trainer.start_iter)
        if due or now - self._last_write >= self._seconds:
            for writer in self._writers:
                writer.write()
            self._last_write = now


class Trainer(DefaultTrainer):
    # Most seconds between two progress lines (and metrics.json rows) while training.
    PROGRESS_SECONDS = 30.0

    def __init__(self, cfg):  # noqa: D107  (DefaultTrainer.__init__, with CPU DDP and our checkpointer)
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cpu = cfg.MODEL.DEVICE == "cpu"
        model = create_ddp_model(model, broadcast_buffers=False, **({"device_ids": None} if on_cpu else {}))
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SharpCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def register_datasets(cls, cfg):
        """Register the datasets that ``cfg`` itself describes; Mask R-CNN's are registered
        by name at import or by :func:`register_json_datasets`, so none here."""

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)  # logs every layer, for log.txt
        logger.info("model: %s", describe_model(cfg, model))
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = NucleiDatasetMapper(cfg, is_train=True)
        if cfg.DATALOADER.KIND_REPEAT_THRESHOLD <= 0:
            return build_detection_train_loader(cfg, mapper=mapper)
        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        sampler = RepeatFactorTrainingSampler(kind_repeat_tensor(dataset, cfg.DATALOADER.KIND_REPEAT_THRESHOLD), seed=cfg.SEED)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=NucleiDatasetMapper(cfg, is_train=False))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Detectron2's evaluation, through test-time flips when ``TEST.AUG.ENABLED``."""
        return super().test(cfg, with_test_time_flips(cfg, model), evaluators)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None, score_thresh=0.5):
        """The one evaluator setting for training, train_net.py and the benchmarks; ``score_thresh``
        is the hard metrics' score threshold (score_thresholds.py sweeps it)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return NucleiEvaluator(dataset_name, output_dir=output_folder, score_thresh=score_thresh,
                               max_dets=max(500, cfg.TEST.DETECTIONS_PER_IMAGE))

    def build_hooks(self):
        """Detectron2's hooks, with its iteration-counting writer made time-aware and writing the
        first step too."""
        return [
            TimedPeriodicWriter(hook._writers, hook._period, self.PROGRESS_SECONDS, first=True)
            if isinstance(hook, hooks.PeriodicWriter) else hook
            for hook in super().build_hooks()
        ]

    def resume_or_load(self, resume=True):
        """As Detectron2's, without its "Loading from  ..." line for an empty MODEL.WEIGHTS."""
        if self.cfg.MODEL.WEIGHTS or (resume and self.checkpointer.has_checkpoint()):
            super().resume_or_load(resume)
        else:
            logger.info("training from random weights (MODEL.WEIGHTS is empty)")

    def train(self):
        """Train, unless the checkpoint resumed from is already the last iteration: Detectron2
        would then evaluate again and log a step with no learning rate."""
        if self.start_iter >= self.max_iter:
            logger.warning(
                "%s: this run already finished (%d of SOLVER.MAX_ITER %d iterations); nothing to do. Raise "
                "SOLVER.MAX_ITER to train on, or evaluate it with --eval-only MODEL.WEIGHTS %s",
                self.cfg.OUTPUT_DIR, self.start_iter, self.max_iter, _final(self.cfg))
            return None
        return super().train()


def kind_repeat_tensor(dataset_dicts, threshold):
    """Repeat factors by image stain (DATALOADER.KIND_REPEAT_THRESHOLD), logged per stain."""
    kinds = [stain(read_image(d["file_name"], format="RGB")) for d in dataset_dicts]
    factors = kind_repeat_factors(kinds, threshold)
    factor_of = dict(zip(kinds, factors))
    counts = sorted(collections.Counter(kinds).items())
    logger.info("repeat by stain: %s", ", ".join(f"{k} {n} images x{factor_of[k]:.2f}" for k, n in counts))
    return torch.tensor(factors, dtype=torch.float32)


def describe_model(cfg, model):
    """The model in one line: architecture, backbone and neck, size, device."""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "SemanticUNet":
        unet = cfg.MODEL.UNET
        what = f"UNet family {unet.NAME!r}, {unet.ENCODER} encoder" + (", deep supervision" if unet.DEEP_SUPERVISION else "")
    elif "sharp_fpn" in cfg.MODEL.BACKBONE.NAME:
        bottom_up = f"VGG{cfg.MODEL.VGG.DEPTH}" if "vgg" in cfg.MODEL.BACKBONE.NAME else f"R-{cfg.MODEL.RESNETS.DEPTH}"
        neck = cfg.MODEL.SHARP_FPN
        form = "" if neck.SCHEME == "plain" else f", {neck.CONV} convs"
        what = f"{'Mask' if cfg.MODEL.MASK_ON else 'Faster'} R-CNN, {bottom_up} + {neck.SCHEME} FPN neck{form}"
    else:
        what = f"{arch}, {cfg.MODEL.BACKBONE.NAME}"
    return f"{what}; {params:.2f} M parameters; on {cfg.MODEL.DEVICE}"


def load_model_for_eval(cfg):
    """Build the model of ``cfg`` and load ``MODEL.WEIGHTS`` (a local file) for evaluation."""
    model = trainer_class(cfg).build_model(cfg)
    SharpCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    if comm.get_world_size() > 1:
        model = create_ddp_model(model, **({"device_ids": None} if cfg.MODEL.DEVICE == "cpu" else {}))
    return model


def set_cpu_threads(cfg):
    """Share the cores between the training processes of one machine: torch otherwise starts one
    thread per core in each, and threads beyond the cores spin and slow down. Data-loader workers
    get no core of their own: they run one torch thread and wait most of the time, so a core
    kept for them sits idle (the recipe trains 1.6x faster on 2 cores with 2 threads than with
    1 beside its worker; benchmarks/RESULTS.md#training-time-threads-and-machines). An explicit OMP_NUM_THREADS wins."""
    if cfg.MODEL.DEVICE == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))


@dataclasses.dataclass(frozen=True)
class LauncherRanks:
    """Where this process sits in a run whose processes a launcher started (torchrun, srun)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def machine_rank(self):
        return self.rank // self.local_world_size


def launcher_ranks(environ=None):
    """The ranks torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) or SLURM's srun
    (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, tasks per node) gave this process, for
    ``--dist-url env://``: one command line under either launcher. Torch then reads the rank-0
    host from MASTER_ADDR and MASTER_PORT; srun sets neither, so MASTER_ADDR must be exported
    and MASTER_PORT defaults to torchrun's 29500. Ranks must go machine by machine (srun's
    default block distribution). A missing or inconsistent variable is a :class:`SetupError`."""
    env = os.environ if environ is None else environ

    def number(name, default=None):
        text = env.get(name, default)
        if text is None or not str(text).isdigit():
            raise SetupError(f"--dist-url env://: {name} is {'not set' if text is None else repr(text)}; "
                             "start the processes with torchrun or srun, or export RANK and WORLD_SIZE")
        return int(text)

    if "RANK" in env or "WORLD_SIZE" in env:
        ranks = LauncherRanks(number("RANK"), number("WORLD_SIZE"), number("LOCAL_RANK", 0), number("LOCAL_WORLD_SIZE", 1))
        names = "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE"
    elif "SLURM_PROCID" in env:
        per_node = (env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_STEP_TASKS_PER_NODE")
                    or env.get("SLURM_TASKS_PER_NODE", "1"))
        counts = {part.split("(")[0] for part in per_node.split(",")}  # "2(x3),1": 2 tasks on 3 nodes, then 1
        if len(counts) != 1:
            raise SetupError(f"--dist-url env://: SLURM tasks per node {per_node!r} are uneven; give every node "
                             "the same --ntasks-per-node")
        ranks = LauncherRanks(number("SLURM_PROCID"), number("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS")),
                              number("SLURM_LOCALID", 0), number("tasks per node", counts.pop()))
        names = "SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and the tasks per node"
    else:
        number("RANK")  # raises, naming what is missing
    consistent = (ranks.local_rank < ranks.local_world_size > 0 and ranks.rank < ranks.world_size
                  and ranks.world_size % ranks.local_world_size == 0
                  and ranks.rank == ranks.machine_rank * ranks.local_world_size + ranks.local_rank)
    if not consistent:
        raise SetupError(f"--dist-url env://: {names} ({ranks.rank}, {ranks.world_size}, {ranks.local_rank}, "
                         f"{ranks.local_world_size}) do not number the processes machine by machine, the same "
                         "number on each")
    if ranks.world_size > 1 and not env.get("MASTER_ADDR"):
        raise SetupError("--dist-url env://: MASTER_ADDR is not set; name the rank-0 machine, e.g. "
                         "export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)")
    return ranks


# Trainers of meta-architectures that need other builders than Mask R-CNN's, by
# MODEL.META_ARCHITECTURE. Their modules add them when imported (``import sharp_fpn`` does).
TRAINERS = {}


def trainer_class(cfg):
    """The trainer for ``cfg``'s model: :class:`Trainer` unless :data:`TRAINERS` names another."""
    return TRAINERS.get(cfg.MODEL.META_ARCHITECTURE, Trainer)


# Loggers whose INFO lines a user follows a run by: our own (config, model, evaluation),
# the data loaded, the start, the progress lines, inference progress, weights loaded and
# the total time. Detectron2's other INFO (environment, command line, the full config, every
# layer, data-loader details) goes to log.txt only; warnings and errors go everywhere.
TERMINAL_LOGGERS = (
    "sharp_fpn",
    "detectron2.data.datasets.coco",
    "detectron2.engine.train_loop",
    "detectron2.utils.events",
    "detectron2.evaluation.evaluator",
    "detectron2.checkpoint",
    "detectron2.engine.hooks",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainFormatter(logging.Formatter):
    """Detectron2's log.txt format without the ANSI colour codes its config dump and tables
    carry (pygments and termcolor write them into the message itself)."""

    def __init__(self):
        super().__init__("[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S")

    def format(self, record):
        return _ANSI.sub("", super().format(record))


class _WithoutTraceback(logging.Formatter):
    """The terminal's lines without the tracebacks logged with them (log.txt keeps those): the
    tool ends an error with one line that says what went wrong."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def format(self, record):
        saved = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None
        try:
            return self.inner.format(record) + (" (traceback in log.txt)" if saved[0] else "")
        finally:
            record.exc_info, record.exc_text = saved


def _for_terminal(record):
    return record.levelno >= logging.WARNING or record.name.startswith(TERMINAL_LOGGERS)


def setup_logging(output_dir):
    """Detectron2's loggers, with every line in ``output_dir``/log.txt (without colour codes)
    and only :data:`TERMINAL_LOGGERS` on the terminal. Call it before Detectron2's
    ``default_setup``: these are that function's own ``setup_logger`` calls, which are cached
    by their arguments, so it then finds the loggers set up and adds no second handler."""
    rank = comm.get_rank()
    loggers = (
        setup_logger(output_dir, distributed_rank=rank, name="fvcore"),
        setup_logger(output_dir, distributed_rank=rank),
        setup_logger(output_dir, distributed_rank=rank, name="sharp_fpn"),
    )
    for each in loggers:
        for handler in each.handlers:
            if getattr(handler, "stream", None) is sys.stdout:
                handler.addFilter(_for_terminal)
                handler.setFormatter(_WithoutTraceback(handler.formatter if sys.stdout.isatty() else _PlainFormatter()))
            else:
                handler.setFormatter(_PlainFormatter())
