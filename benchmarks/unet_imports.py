"""Import sharp_fpn.unet's framework-free modules on a machine without Detectron2.

The package __init__ files register Detectron2 components, so a bare GPU box (PyTorch and
NumPy only) could not import them. When Detectron2 is missing, empty stand-ins for these
packages go into sys.modules, and their plain submodules (schemes, unet.model, unet.losses,
unet.supervision, unet.augment, unet.metrics, unet.data, data.split) import on their own.
"""
import sys
import types
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "sharp_fpn"


def ensure_importable() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        for name, path in (("sharp_fpn", PACKAGE_DIR), ("sharp_fpn.unet", PACKAGE_DIR / "unet"),
                           ("sharp_fpn.data", PACKAGE_DIR / "data")):
            if name not in sys.modules:
                stand_in = types.ModuleType(name)
                stand_in.__path__ = [str(path)]
                sys.modules[name] = stand_in
