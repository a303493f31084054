"""The seed's hybrid segmentation loss (Eq. 2-6) and its three terms, for binary masks.

    loss = 0.5 * focal + laplace-smoothed soft Dice + 0.5 * Lovasz hinge        (Eq. 2)

All three take logits (N, 1, H, W) and a {0, 1} target of the same shape. Readings of the
seed where its formulas are ambiguous:
- Focal (Eq. 3) writes only the positive term; we use the full binary focal loss of Lin et
  al. (alpha on positives, 1 - alpha on negatives), averaged over pixels.
- Soft Dice (Eq. 4) sums over each image's pixels ("tiling picture" in Eq. 6) and is
  averaged over the batch; the +1 in numerator and denominator is the Laplace smoothing.
- Lovasz hinge (Eq. 5) is written as a plain hinge; the cited loss (Yu and Blaschko; Berman
  et al.) sorts the hinge errors and weights them by the gradient of the Lovasz extension of
  the Jaccard loss. We implement that, per image, averaged over the batch.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Mean binary focal loss: -alpha_t (1 - p_t)^gamma log(p_t)."""
    target = target.to(logits.dtype)
    log_p_t = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = log_p_t.exp()
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (-alpha_t * (1 - p_t) ** gamma * log_p_t).mean()


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - (2 |Y . P| + 1) / (|Y| + |P| + 1) per image on probabilities P, batch mean."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.to(prob.dtype).flatten(1)
    dice = (2 * (prob * target).sum(1) + smooth) / (prob.sum(1) + target.sum(1) + smooth)
    return (1 - dice).mean()


def lovasz_jaccard_weights(sorted_target: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at labels sorted by error, (N, P).

    Walking an image's pixels from the worst error to the best, the k-th weight is how much
    the Jaccard loss of "the first k pixels are wrong" exceeds that of "the first k-1 are".
    """
    positives = sorted_target.sum(dim=1, keepdim=True)
    inter = positives - sorted_target.cumsum(dim=1)
    union = positives + (1 - sorted_target).cumsum(dim=1)
    jaccard_loss = 1 - inter / union
    return torch.cat([jaccard_loss[:, :1], jaccard_loss[:, 1:] - jaccard_loss[:, :-1]], dim=1)


def lovasz_hinge_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Lovasz hinge per image (signs +1 / -1, hinge errors 1 - s * logit), batch mean."""
    logits = logits.flatten(1)
    target = target.flatten(1).to(logits.dtype)
    errors, order = torch.sort(1 - logits * (2 * target - 1), dim=1, descending=True)
    weights = lovasz_jaccard_weights(target.gather(1, order))
    return (F.relu(errors) * weights).sum(dim=1).mean()


class HybridLoss(nn.Module):
    """Eq. 2 with its weights and the focal parameters as arguments (seed values default)."""

    def __init__(
        self,
        focal_weight: float = 0.5,
        dice_weight: float = 1.0,
        lovasz_weight: float = 0.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.lovasz_weight = lovasz_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = logits.new_zeros(())
        if self.focal_weight:
            loss = loss + self.focal_weight * focal_loss(logits, target, self.focal_alpha, self.focal_gamma)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * lovasz_hinge_loss(logits, target)
        return loss
