"""Filter, once at import, the deprecation warnings this Detectron2 raises on new torch/numpy.

They flood training logs (torch.jit.script, meshgrid indexing, numpy 2 aliases) and say
nothing a user can act on.
"""
import warnings

for pattern in (
    r".*torch\.jit\.(script|trace).*",
    r".*meshgrid.*indexing.*",
    r".*`torch\.cuda\.amp\..*` is deprecated.*",
    r".*torch\.cuda\.amp\.autocast.*",
    r".*pkg_resources is deprecated.*",
    r".*TypedStorage is deprecated.*",
):
    warnings.filterwarnings("ignore", message=pattern)
