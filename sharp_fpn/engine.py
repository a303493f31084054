"""Training and evaluation for Detectron2's tools: our reader, evaluator and checkpointer.

:class:`Trainer` is Detectron2's DefaultTrainer with only the pieces nuclei need swapped in,
plus CPU multi-process training (DDP with ``device_ids=None``, which Detectron2's
``create_ddp_model`` does not pass).
"""
import logging
import os
import weakref

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .checkpoint import SharpCheckpointer
from .data import NucleiDatasetMapper, register_coco_nuclei
from .evaluation import NucleiEvaluator

JSON_TRAIN, JSON_TEST = "sharp_fpn_json_train", "sharp_fpn_json_test"


def register_json_datasets(cfg, train_json=None, test_json=None, image_root=None):
    """Register converted COCO JSONs (``file_name`` relative to ``image_root``) and point
    DATASETS.TRAIN / DATASETS.TEST at them. Run in every worker: ``launch`` spawns fresh ones."""
    for json_file, name, key in ((train_json, JSON_TRAIN, "TRAIN"), (test_json, JSON_TEST, "TEST")):
        if json_file:
            if not os.path.isfile(json_file):
                raise FileNotFoundError(f"{json_file}: dataset JSON not found")
            root = image_root or os.path.dirname(os.path.abspath(json_file))
            register_coco_nuclei(name, json_file, root)
            cfg.DATASETS[key] = (name,)


class Trainer(DefaultTrainer):
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
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=NucleiDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=NucleiDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return NucleiEvaluator(dataset_name, output_dir=output_folder, max_dets=max(500, cfg.TEST.DETECTIONS_PER_IMAGE))


def load_model_for_eval(cfg):
    """Build the model of ``cfg`` and load ``MODEL.WEIGHTS`` (a local file) for evaluation."""
    model = trainer_class(cfg).build_model(cfg)
    SharpCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    if comm.get_world_size() > 1:
        model = create_ddp_model(model, **({"device_ids": None} if cfg.MODEL.DEVICE == "cpu" else {}))
    return model


def set_cpu_threads(cfg):
    """Share the CPU between training processes and their data-loader workers: torch otherwise
    starts one thread per core in each process, and threads beyond the cores spin and slow down.
    An explicit OMP_NUM_THREADS wins."""
    if cfg.MODEL.DEVICE == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        free = (os.cpu_count() or 1) - cfg.DATALOADER.NUM_WORKERS * comm.get_local_size()
        torch.set_num_threads(max(1, free // comm.get_local_size()))


def trainer_class(cfg):
    """The trainer for ``cfg``'s model: :class:`Trainer`, or the UNet family's for SemanticUNet."""
    if cfg.MODEL.META_ARCHITECTURE == "SemanticUNet":
        from .unet.trainer import UNetTrainer

        return UNetTrainer
    return Trainer
