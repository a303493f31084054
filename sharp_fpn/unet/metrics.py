"""Foreground IoU and Dice of the UNet family, under every definition in use for numbers like
the seed's Table 1.

Papers in this line report "IoU" without saying how it is averaged, and the definitions
differ on the same predictions (benchmarks/RESULTS.md#what-does-the-seeds-iou-measure), so each
is computed from one pass and reported by name. All are fractions in [0, 1], as in
sharp_fpn.evaluation; "binary" means probability >= threshold (0.5).

- ``iou``, ``dice``: binary, per image, then the mean over images.
- ``iou_pooled``, ``dice_pooled``: binary, all pixels of the set counted together.
- ``iou_batch128``: binary, pooled within each batch of 128 images (evaluation order), then
  the batches' mean weighted by their size: pytorch-nested-unet's validation IoU, at the
  seed's batch size.
- ``miou_fg_bg``: two-class mean IoU, (foreground IoU + background IoU) / 2, pooled over
  the set: the confusion-matrix mIoU of semantic segmentation (Detectron2's SemSegEvaluator).
- ``soft_dice``: Dice of the probabilities themselves with the Laplace +1 of the seed's Eq. 4,
  per image, then the mean: the only Dice here that can fall below IoU, as the seed's does.

An image (or batch) where both masks are empty scores 1.
"""
from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor

SEED_BATCH_SIZE = 128  # the seed's training and validation batch


@dataclass
class PixelCounts:
    """Per-image pixel sums, (N,) float64 each, in evaluation order: the binary intersection,
    predicted and true foreground, all pixels, and the soft (probability) intersection and sum."""

    inter: Tensor
    pred: Tensor
    true: Tensor
    pixels: Tensor
    soft_inter: Tensor
    soft_pred: Tensor


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 / 0 = 1 (both masks empty)."""
    return torch.where(den == 0, torch.ones_like(num), num / den.clamp(min=1e-12))


def iou_per_image(c: PixelCounts) -> float:
    return _ratio(c.inter, c.pred + c.true - c.inter).mean().item()


def dice_per_image(c: PixelCounts) -> float:
    return _ratio(2 * c.inter, c.pred + c.true).mean().item()


def iou_pooled(c: PixelCounts) -> float:
    return _ratio(c.inter.sum(), (c.pred + c.true - c.inter).sum()).item()


def dice_pooled(c: PixelCounts) -> float:
    return _ratio(2 * c.inter.sum(), (c.pred + c.true).sum()).item()


def iou_batch_pooled(c: PixelCounts, batch_size: int = SEED_BATCH_SIZE) -> float:
    """IoU pooled within consecutive batches of ``batch_size`` images, then averaged over the
    batches weighted by their size (a short last batch counts less)."""
    inter, union = c.inter.split(batch_size), (c.pred + c.true - c.inter).split(batch_size)
    scores = torch.stack([_ratio(i.sum(), u.sum()) for i, u in zip(inter, union)])
    sizes = torch.tensor([len(i) for i in inter], dtype=scores.dtype)
    return ((scores * sizes).sum() / sizes.sum()).item()


def miou_fg_bg(c: PixelCounts) -> float:
    """Mean of the foreground and background IoU, each pooled over the set."""
    union = (c.pred + c.true - c.inter).sum()
    background = _ratio(c.pixels.sum() - union, c.pixels.sum() - c.inter.sum())
    return ((_ratio(c.inter.sum(), union) + background) / 2).item()


def soft_dice(c: PixelCounts, smooth: float = 1.0) -> float:
    """(2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth) per image, mean over images."""
    return ((2 * c.soft_inter + smooth) / (c.soft_pred + c.true + smooth)).mean().item()


class ForegroundScores:
    """Accumulates per-image pixel sums; ``summary()`` gives every definition."""

    def __init__(self, threshold: float = 0.5, batch_size: int = SEED_BATCH_SIZE):
        self.threshold = threshold
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self._sums = []

    def update(self, probabilities: Tensor, target: Tensor) -> None:
        """``probabilities`` in [0, 1] and ``target`` (N, ...) with one image per row."""
        prob = probabilities.detach().flatten(1).double()
        true = (target.detach() > 0).flatten(1)
        pred = prob >= self.threshold
        self._sums.append(torch.stack([
            (pred & true).sum(1).double(),
            pred.sum(1).double(),
            true.sum(1).double(),
            torch.full((len(prob),), float(prob.shape[1]), dtype=torch.float64, device=prob.device),
            (prob * true).sum(1),
            prob.sum(1),
        ]).cpu())

    def merge(self, other: "ForegroundScores") -> None:
        """Add another accumulator's images (e.g. gathered from other processes)."""
        self._sums += other._sums

    def counts(self) -> PixelCounts:
        return PixelCounts(*torch.cat(self._sums, dim=1))

    def summary(self) -> Dict[str, float]:
        """Every definition of the module docstring, by name, and the number of ``images``."""
        if not self._sums:
            return {}
        c = self.counts()
        return {
            "iou": iou_per_image(c),
            "iou_pooled": iou_pooled(c),
            f"iou_batch{self.batch_size}": iou_batch_pooled(c, self.batch_size),
            "miou_fg_bg": miou_fg_bg(c),
            "soft_dice": soft_dice(c),
            "dice": dice_per_image(c),
            "dice_pooled": dice_pooled(c),
            "images": float(c.inter.numel()),
        }
