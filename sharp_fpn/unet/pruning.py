"""Pruning a deeply supervised UNet++ / UNet# to level L^i (seed §2.4, Fig. 4, Fig. 7).

A node's inputs in the nested and sharp schemes depend only on the node, not on the grid
size, so the model pruned to level i is exactly the same scheme built on i + 1 rows: nodes
X(r, c) with r + c <= i, output X(0, i). "Embedded" training trains the full model with a
head on every X(0, j) and prunes it afterwards (``prune``: copy the weights it keeps);
"isolated" training trains that smaller model from scratch (``pruned_model``).
"""
from ..schemes import build_scheme
from .model import SchemeUNet, node_key

PRUNABLE = ("nested", "sharp")


def pruned_model(model: SchemeUNet, level: int, deep_supervision: bool = False) -> SchemeUNet:
    """A fresh L^level model with ``model``'s scheme, encoder, widths and options (untrained)."""
    name = model.scheme.name
    if name not in PRUNABLE:
        raise ValueError(f"The {name!r} scheme has no intermediate first-row nodes to prune to; use one of {PRUNABLE}")
    if not 1 <= level <= model.scheme.levels - 1:
        raise ValueError(f"Pruning level must be in 1..{model.scheme.levels - 1}, got {level}")
    return SchemeUNet(
        build_scheme(name, level + 1),
        model.filters[: level + 1],
        in_channels=model.in_channels,
        num_classes=model.num_classes,
        branch_channels=model.branch_channels,
        deep_supervision=deep_supervision,
        cgm=model.has_cgm,
        encoder=model.encoder_name,
        encoder_norm=model.encoder_norm,
    )


def prune(model: SchemeUNet, level: int) -> SchemeUNet:
    """The inference model L^level of a trained ``model``, sharing its trained weights.

    Needs a head on X(0, level), i.e. a model trained with deep supervision (or already at
    that level). The result is in ``model``'s train/eval mode.
    """
    small = pruned_model(model, level)
    head = f"heads.{node_key((0, level))}."
    state = model.state_dict()
    if not any(key.startswith(head) for key in state):
        raise ValueError(f"No head on X(0,{level}) to prune to: train with deep supervision first")
    small.load_state_dict({key: state[key] for key in small.state_dict()})
    return small.train(model.training)
