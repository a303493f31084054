"""Classification-guided modules (seed §2.3, Fig. 3).

A CGM looks at a supervised node's features and says whether the image holds any object at
all; at inference its arg-max (0 or 1) multiplies that branch's mask, which removes the
false positives of empty images. The seed uses two forms: a two-layer classifier on the
wide, deep branches (X(4,0), X(3,1), green in Fig. 3) and a one-layer one on the narrow
branches (blue). Both pool the map twice (average and max) and concatenate.
"""
import torch
from torch import Tensor, nn


class ClassificationGuide(nn.Module):
    """avg-pool ++ max-pool -> Flatten -> [BN1d -> Dropout -> Linear (-> ReLU)] x k -> 2 logits.

    ``hidden`` = 0 gives the seed's simplified (blue) CGM, > 0 its two-layer (green) CGM. The
    seed does not give the hidden width; a quarter of the branch width is our choice.
    The softmax of the seed is left to the loss / the caller, so logits are returned.
    """

    def __init__(self, channels: int, hidden: int = 0, dropout: float = 0.5):
        super().__init__()
        layers = []
        width = 2 * channels
        if hidden:
            layers += [nn.BatchNorm1d(width), nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers += [nn.BatchNorm1d(width), nn.Dropout(dropout), nn.Linear(width, 2)]
        self.classifier = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.classifier(pooled)


def build_cgm(channels: int, deep: bool) -> ClassificationGuide:
    """The green (two-layer) CGM for the deep branches, the blue (one-layer) one elsewhere."""
    return ClassificationGuide(channels, hidden=max(channels // 4, 8) if deep else 0)


def has_object(objectness_logits: Tensor) -> Tensor:
    """The CGM decision per image, (N,) in {0., 1.}: the seed's Softmax + Argmax."""
    return objectness_logits.argmax(dim=1).to(objectness_logits.dtype)
