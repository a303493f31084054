"""UNetTrainer: the Mask R-CNN :class:`~sharp_fpn.engine.Trainer` with the parts a semantic UNet
changes (so it keeps CPU multi-process training and local weight import).

Only the builders differ from Mask R-CNN training: the semantic Dsb2018 loaders, the
foreground IoU/Dice evaluator and the seed's optimizer (Adam with weight decay; the cosine
schedule is Detectron2's own WarmupCosineLR, set in the config).
"""
import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.solver.build import maybe_add_gradient_clipping

from ..engine import TRAINERS, Trainer
from .evaluator import ForegroundEvaluator
from .loader import SemanticMapper, register_semantic_dsb2018


class UNetTrainer(Trainer):
    @classmethod
    def register_datasets(cls, cfg):
        register_semantic_dsb2018(cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        register_semantic_dsb2018(cfg)
        return build_detection_train_loader(
            DatasetCatalog.get(cfg.DATASETS.TRAIN[0]),
            mapper=SemanticMapper(cfg.INPUT.UNET.AUGMENT),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=False,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        register_semantic_dsb2018(cfg)
        return build_detection_test_loader(
            DatasetCatalog.get(dataset_name),
            mapper=SemanticMapper(False),
            batch_size=cfg.SOLVER.IMS_PER_BATCH,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return ForegroundEvaluator(cfg.MODEL.UNET.SCORE_THRESH)

    @classmethod
    def build_optimizer(cls, cfg, model):
        params = [p for p in model.parameters() if p.requires_grad]
        adam = maybe_add_gradient_clipping(cfg, torch.optim.Adam)
        return adam(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)


TRAINERS["SemanticUNet"] = UNetTrainer
