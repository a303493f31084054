"""Foreground IoU and Dice of binary masks, the metrics of the seed's Table 1.

Predictions are binarised at a threshold (0.5 on probabilities). Two averages are kept, since
the seed does not say which it reports: per image (then the mean over images) and pooled
(all pixels of the set counted together). An image where both masks are empty scores 1,
as in sharp_fpn.evaluation.
"""
from typing import Dict

import torch
from torch import Tensor


class ForegroundScores:
    """Accumulates per-image intersections and mask sizes; ``summary()`` gives the scores."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._inter, self._pred, self._true = [], [], []

    def update(self, probabilities: Tensor, target: Tensor) -> None:
        """``probabilities`` and ``target`` (N, ...) with one image per row."""
        pred = (probabilities.detach() >= self.threshold).flatten(1)
        true = (target.detach() > 0).flatten(1)
        self._inter.append((pred & true).sum(1).double().cpu())
        self._pred.append(pred.sum(1).double().cpu())
        self._true.append(true.sum(1).double().cpu())

    def merge(self, other: "ForegroundScores") -> None:
        """Add another accumulator's images (e.g. gathered from other processes)."""
        self._inter += other._inter
        self._pred += other._pred
        self._true += other._true

    def summary(self) -> Dict[str, float]:
        """``iou`` / ``dice`` (per-image means) and ``iou_pooled`` / ``dice_pooled``, in %."""
        if not self._inter:
            return {}
        inter, pred, true = (torch.cat(values) for values in (self._inter, self._pred, self._true))
        union = pred + true - inter
        both_empty = union == 0
        iou = torch.where(both_empty, torch.ones_like(inter), inter / union.clamp(min=1))
        dice = torch.where(both_empty, torch.ones_like(inter), 2 * inter / (pred + true).clamp(min=1))
        pooled_union = union.sum().clamp(min=1)
        return {
            "iou": 100 * iou.mean().item(),
            "dice": 100 * dice.mean().item(),
            "iou_pooled": 100 * (inter.sum() / pooled_union).item(),
            "dice_pooled": 100 * (2 * inter.sum() / (pred.sum() + true.sum()).clamp(min=1)).item(),
            "images": float(inter.numel()),
        }
