"""Silence, once at import, the warnings this Detectron2 and torch repeat on every run.

They flood training logs and the prediction API (torch.jit.script, meshgrid indexing, numpy 2
aliases, torch.fx's is_fx_tracing, a CUDA_HOME without a CUDA runtime, NumPy arrays that
torch cannot write to, DDP's broadcast_buffers) and say nothing a user can act on.
"""
import logging
import warnings

for pattern in (
    r".*torch\.jit\.(script|trace).*",
    r".*meshgrid.*indexing.*",
    r".*`torch\.cuda\.amp\..*` is deprecated.*",
    r".*torch\.cuda\.amp\.autocast.*",
    r".*pkg_resources is deprecated.*",
    r".*TypedStorage is deprecated.*",
    # Detectron2 wraps read-only mask arrays; nothing writes to them.
    r".*The given NumPy array is not writable.*",
    # CPU multi-process training relies on broadcast_buffers=False, as the warning itself advises.
    r".*`broadcast_buffers` is deprecated.*",
):
    warnings.filterwarnings("ignore", message=pattern)

# torch logs these through the logging module, once per process (each data-loader worker too):
# Detectron2 calls the deprecated is_fx_tracing(), and its environment report imports
# cpp_extension, which complains on machines with a CUDA toolkit but no GPU.
for name in ("torch.fx._symbolic_trace", "torch.utils.cpp_extension"):
    logging.getLogger(name).setLevel(logging.ERROR)
