"""SemanticUNet: the UNet family as a Detectron2 meta-architecture.

Detectron2's training loop, checkpointer and evaluation drive it like any model: in
training ``forward`` takes the mapped batch and returns a dict of losses, in inference a
list of {"sem_seg": (1, H, W) foreground probability, "readout": which heads made it}, so an
evaluation names the (pruned) model it scored.
"""
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor, nn

from .augment import normalize
from .losses import HybridLoss
from .model import SchemeUNet
from .supervision import MODES, DeepSupervisionLoss, combine_heads
from .zoo import build_unet


@META_ARCH_REGISTRY.register()
class SemanticUNet(nn.Module):
    """A ``SchemeUNet``, its deep-supervision loss and the way inference reads its heads."""

    @configurable
    def __init__(
        self,
        *,
        net: SchemeUNet,
        criterion: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        mode: str = "accurate",
        prune_level: int = 0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"MODEL.UNET.DS_MODE = {mode!r}; valid: {', '.join(MODES)}")
        if prune_level and (0, prune_level) not in net.supervised:
            raise ValueError(
                f"MODEL.UNET.PRUNE_LEVEL = {prune_level} needs a head on X(0,{prune_level}): use the nested or sharp "
                f"scheme with MODEL.UNET.DEEP_SUPERVISION True (model: {net.extra_repr()})"
            )
        self.net = net
        self.criterion = criterion
        self.mode = mode
        self.prune_level = prune_level
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1), persistent=False)

    @classmethod
    def from_config(cls, cfg):
        unet = cfg.MODEL.UNET
        net = build_unet(
            unet.NAME,
            filters=list(unet.FILTERS) or None,
            branch_channels=None if unet.BRANCH_CHANNELS < 0 else unet.BRANCH_CHANNELS,
            deep_supervision=unet.DEEP_SUPERVISION,
            cgm=unet.CGM,
            in_channels=len(cfg.MODEL.PIXEL_MEAN),
            encoder=unet.ENCODER,
            encoder_norm=unet.ENCODER_NORM,
            encoder_weights=unet.ENCODER_WEIGHTS,
        )
        loss = unet.LOSS
        seg_loss = HybridLoss(loss.FOCAL_WEIGHT, loss.DICE_WEIGHT, loss.LOVASZ_WEIGHT, loss.FOCAL_ALPHA, loss.FOCAL_GAMMA)
        return {
            "net": net,
            "criterion": DeepSupervisionLoss(seg_loss, unet.CGM_LOSS_WEIGHT),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "mode": unet.DS_MODE,
            "prune_level": unet.PRUNE_LEVEL,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: List[Dict]) -> Tensor:
        images = torch.stack([item["image"] for item in batched_inputs]).to(self.device, torch.float32)
        return normalize(images, self.pixel_mean, self.pixel_std)

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess(batched_inputs)
        if self.training:
            targets = torch.stack([item["sem_seg"] for item in batched_inputs]).to(self.device)
            return self.criterion(self.net(images), targets[:, None].float())
        return [{"sem_seg": probability, "readout": self.readout} for probability in self.inference(images)]

    @property
    def readout(self) -> str:
        """Which heads inference reads, e.g. "pruned to L2: head X(0,2)"."""
        first_row = [j for i, j in self.net.supervised if i == 0]
        if self.prune_level:
            return f"pruned to L{self.prune_level}: head X(0,{self.prune_level})"
        if self.mode == "accurate" and len(first_row) > 1:
            return f"not pruned, accurate mode: mean of heads X(0,{first_row[0]}..{first_row[-1]})"
        return f"not pruned: head X(0,{first_row[-1]})"

    def inference(self, images: Tensor) -> Tensor:
        """Foreground probability (N, 1, H, W) of normalised images."""
        if self.prune_level:
            return combine_heads(self.net(images, level=self.prune_level), "fast", self.prune_level)
        return combine_heads(self.net(images), self.mode)
