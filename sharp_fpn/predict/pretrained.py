"""Models shipped inside the package, by name, and the export that makes one.

A shipped model is a Detectron2 config plus the model's state dict in half precision (half the
size of float32; nothing is downloaded at run time, so the weights travel with the code, in
``sharp_fpn/pretrained/``). The SHA-256 of each weights file is recorded here: a damaged,
truncated or swapped file is refused with one line saying what to do, and the file is read
with ``torch.load(weights_only=True)``, which runs no pickled code.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .predictor import SetupError, _first_line
from .writers import atomic_path, write_text_atomic

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
MAX_SHIPPED_MB = 30  # what a git clone can carry comfortably (issue 12)


@dataclass(frozen=True)
class ShippedModel:
    """A model that ships with the package: its config and fp16 weights files in ``folder``,
    and the SHA-256 of the weights (None until a trained model has been exported)."""

    name: str
    config: str
    weights: str
    sha256: Optional[str]
    summary: str = ""
    folder: Path = PRETRAINED_DIR

    @property
    def config_path(self) -> Path:
        return self.folder / self.config

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights

    def check(self) -> None:
        """Raise a one-line SetupError unless both files are there and the weights match the
        recorded checksum."""
        label = f"shipped model {self.name!r}"
        if self.sha256 is None:
            raise SetupError(f"{label} is not in this version yet (no checksum recorded in "
                             f"sharp_fpn/predict/pretrained.py); predict with your own model: --weights FILE.pth")
        for path in (self.weights_path, self.config_path):
            if not path.is_file():
                raise SetupError(f"{label}: {path} is missing; reinstall sharp_fpn (in a git clone: "
                                 f"git checkout -- {path.name} in {path.parent}), or pass --weights FILE.pth")
        actual = file_sha256(self.weights_path)
        if actual != self.sha256:
            raise SetupError(f"{label}: {self.weights_path} is damaged or was replaced (sha256 {actual[:12]}..., "
                             f"expected {self.sha256[:12]}...); reinstall sharp_fpn or restore the file from git")

    def load_state_dict(self) -> dict:
        """The checked weights as a float32 state dict."""
        self.check()
        return read_state_dict(self.weights_path)


# The registry. Replace a shipped file rarely: every version stays in git history.
SHIPPED_MODELS = {
    model.name: model
    for model in (
        ShippedModel(
            "nuclei", "nuclei.yaml", "nuclei.pth",
            sha256="f86c5fa1dea9971773369e92f103bdaa538e053316335fa0694adee5c673e66b",
            summary="narrow R-18 Mask R-CNN with Cascade R-CNN box head, plain FPN neck, trained on CPU on 596 of the 600 Dsb2018 stage1_train images (all but the 4 examples; CC0)",
        ),
    )
}
DEFAULT_MODEL = "nuclei"


def shipped_model(model: Union[str, ShippedModel] = DEFAULT_MODEL) -> ShippedModel:
    """A registered model by name (or the given ShippedModel); an unknown name is a SetupError
    listing the known ones."""
    if isinstance(model, ShippedModel):
        return model
    if model not in SHIPPED_MODELS:
        raise SetupError(f"no shipped model named {model!r}; known: {', '.join(SHIPPED_MODELS)}")
    return SHIPPED_MODELS[model]


def file_sha256(path: Union[str, os.PathLike]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Union[str, os.PathLike]) -> dict:
    """The model state dict of a checkpoint file, floating tensors cast to float32. Reads
    Detectron2 checkpoints (``{"model": ..., "optimizer": ...}``) and bare state dicts, with
    ``weights_only=True``; anything else is a SetupError naming the file."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch raise many types for a bad file
        raise SetupError(f"weights {path}: cannot read a checkpoint ({type(error).__name__}: {_first_line(error)})") from error
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SetupError(f"weights {path}: no model state dict found (expected tensors, or a 'model' entry of them)")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


@dataclass
class Exported:
    config: Path
    weights: Path
    num_bytes: int
    sha256: str

    def registry_entry(self, name: str) -> str:
        """The line to put into SHIPPED_MODELS for these files."""
        return f'ShippedModel("{name}", "{self.config.name}", "{self.weights.name}", sha256="{self.sha256}")'


def export_model(
    checkpoint: Union[str, os.PathLike],
    output_dir: Union[str, os.PathLike],
    name: str = DEFAULT_MODEL,
    config: Union[str, os.PathLike, None] = None,
) -> Exported:
    """Write a trained checkpoint in the shipped form: ``<name>.pth`` (the model's state dict
    only, floating tensors in float16) and ``<name>.yaml`` (its config, by default the
    ``config.yaml`` training wrote beside the checkpoint). The pair is checked first: the model
    the config builds must take every tensor of the state dict."""
    from detectron2.modeling import build_model

    from .predictor import build_predict_cfg, load_weights

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise SetupError(f"weights {checkpoint}: no such file")
    config = Path(config) if config else checkpoint.parent / "config.yaml"
    if not config.is_file():
        raise SetupError(f"config {config}: no such file (give the training config with --config)")
    state = read_state_dict(checkpoint)
    cfg = build_predict_cfg(str(config), device="cpu", score_threshold=None)
    load_weights(build_model(cfg), state, str(config))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}

    output_dir = Path(output_dir)
    weights_path, config_path = output_dir / f"{name}.pth", output_dir / f"{name}.yaml"
    with atomic_path(weights_path) as temporary:
        torch.save({"model": half}, temporary)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    cfg.OUTPUT_DIR = ""  # the training machine's folder means nothing where the model is shipped
    write_text_atomic(config_path, cfg.dump())
    return Exported(config_path, weights_path, weights_path.stat().st_size, file_sha256(weights_path))
