"""Deep supervision (seed §2.2, Fig. 2): one loss over all heads, and one mask out of them.

Training ("accurate mode" in the seed): every head's hybrid loss against the ground truth
max-pooled to the head's resolution (the seed's "d x2 ... d x16"), averaged over heads; a
CGM's binary cross-entropy on "does the image hold any foreground", averaged likewise.
Inference: "accurate" averages the probabilities of the full-resolution heads X(0, j);
"fast" reads one of them, X(0, level), which is what a model pruned to that level computes.
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cgm import has_object
from .losses import HybridLoss
from .model import UNetOutput

MODES = ("accurate", "fast")


def pooled_target(target: Tensor, size) -> Tensor:
    """Ground truth (N, 1, H, W) max-pooled onto ``size``: a coarse pixel is foreground if any
    fine pixel under it is."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.adaptive_max_pool2d(target, size)


class DeepSupervisionLoss(nn.Module):
    """Mean hybrid loss over the heads, plus the mean CGM loss when the model has CGMs."""

    def __init__(self, seg_loss: Optional[nn.Module] = None, cgm_weight: float = 1.0):
        super().__init__()
        self.seg_loss = seg_loss if seg_loss is not None else HybridLoss()
        self.cgm_weight = cgm_weight

    def forward(self, output: UNetOutput, target: Tensor) -> Dict[str, Tensor]:
        target = target.float()
        seg = [  # in float32 even under autocast: the Lovasz sort and the log terms need it
            self.seg_loss(logits.float(), pooled_target(target, logits.shape[-2:])) for logits in output.logits.values()
        ]
        losses = {"loss_seg": torch.stack(seg).mean()}
        if output.objectness:
            # BCE on the softmax of 2 logits against one-hot targets (the seed's choice) equals
            # the 2-class cross-entropy, which is the numerically stable way to write it.
            present = target.flatten(1).amax(dim=1).long()  # 1 where the image holds foreground
            cls = [F.cross_entropy(logits.float(), present) for logits in output.objectness.values()]
            losses["loss_cgm"] = self.cgm_weight * torch.stack(cls).mean()
        return losses


def head_probabilities(output: UNetOutput, node) -> Tensor:
    """Sigmoid of one head, multiplied by its CGM decision when there is one."""
    prob = torch.sigmoid(output.logits[node])
    if node in output.objectness:
        prob = prob * has_object(output.objectness[node]).view(-1, 1, 1, 1)
    return prob


def combine_heads(output: UNetOutput, mode: str = "accurate", level: Optional[int] = None) -> Tensor:
    """Foreground probability (N, C, H, W) from a model's heads.

    ``accurate``: mean over the full-resolution heads X(0, j). ``fast``: head X(0, level)
    alone (default: the deepest one present). A model without deep supervision has one
    full-resolution head, and both modes return it.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown deep-supervision mode {mode!r}; valid: {', '.join(MODES)}")
    first_row = sorted(node for node in output.logits if node[0] == 0)
    if mode == "fast":
        node = (0, level) if level is not None else first_row[-1]
        if node not in output.logits:
            raise ValueError(f"No head on X{node}; heads: {first_row}")
        return head_probabilities(output, node)
    return torch.stack([head_probabilities(output, node) for node in first_row]).mean(dim=0)
