"""Deterministic train/validation splits of image ids."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from .issues import DatasetError


def split_ids(image_ids: Iterable[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ids into (train, val), both sorted.

    Ids are ranked by SHA-256 of "seed:id", not by Python's RNG, so the split is the same on
    every machine and Python version. The validation part has round(n * val_fraction) images,
    but at least one and at most n - 1 when 0 < val_fraction < 1 and n >= 2, so a small demo
    set still gets both parts.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    ids = sorted(set(image_ids))
    num_val = round(len(ids) * val_fraction)
    if 0.0 < val_fraction < 1.0 and len(ids) >= 2:
        num_val = min(max(num_val, 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda image_id: hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest())
    val = set(ranked[:num_val])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids from a text file, one per line; blank lines and "#" comments are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read id list ({error.strerror})") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
