"""Load pretrained weights: Detectron2/MSRA formats as Detectron2 does, plus torchvision.

``MODEL.WEIGHTS`` (and ``MODEL.UNET.ENCODER_WEIGHTS``) is a local file or a URL Detectron2
accepts (``detectron2://``, ``https://``, ``http://``). A URL is fetched once, only because the
user named it, by Detectron2's own PathManager into iopath's cache, and read from there after.
The MSRA ``R-101.pkl`` (Caffe2 names) goes through Detectron2's own conversion. A torchvision
ImageNet state dict (``resnet101-*.pth``, ``vgg16-*.pth``, ``vgg16_bn-*.pth``) is recognised by
its keys, wherever it came from, and renamed to this project's module names first.
"""
import contextlib
import http.client
import io
import os
import re
import socket
import sys
import time
from typing import Dict
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import Detectron2Handler, PathManager
from iopath.common.file_io import get_cache_dir

BOTTOM_UP = "backbone.bottom_up."
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")

# The URL forms Detectron2's PathManager downloads (ftp:// too, but nobody serves weights so).
URL_PREFIXES = (Detectron2Handler.PREFIX, "https://", "http://")
# Seconds without a byte before a download gives up: urllib waits for ever, and a host that drops
# packets would otherwise hang the run instead of naming the URL.
DOWNLOAD_TIMEOUT_S = 60


class WeightsUnavailable(OSError):
    """A weights URL that could not be fetched; the message is one line naming the URL and the
    cache path where the file can be put by hand."""


def is_url(path: str) -> bool:
    return str(path).startswith(URL_PREFIXES)


def _file_url(url: str) -> str:
    """The URL PathManager downloads for ``url``: ``detectron2://`` is Detectron2's file server, and
    a query (``?matching_heuristics=True``) is an option for the checkpointer, not part of the file."""
    url = urlparse(url)._replace(query="").geturl()
    if url.startswith(Detectron2Handler.PREFIX):
        url = Detectron2Handler.S3_DETECTRON2_PREFIX + url[len(Detectron2Handler.PREFIX):]
    return url


def cache_path(url: str) -> str:
    """Where PathManager keeps ``url``: iopath's cache folder ($FVCORE_CACHE, else
    ~/.torch/iopath_cache) joined with the URL's path, as its HTTPURLHandler lays it out. A file
    found there is used without contacting the host, so an offline user can put it there by hand."""
    return os.path.join(get_cache_dir(), urlparse(_file_url(url)).path.lstrip("/"))


def local_weights(path: str) -> str:
    """``path`` itself when it is not a URL; else its copy in the cache, downloaded by Detectron2's
    PathManager the first time. Raises :class:`WeightsUnavailable` when the host cannot be reached."""
    if not is_url(path):
        return path
    url = urlparse(path)._replace(query="").geturl()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stderr(_LateStream(sys.stderr)):
            return PathManager.get_local_path(url)
    except (OSError, http.client.HTTPException) as error:
        reason = error.reason if isinstance(error, URLError) and not isinstance(error, HTTPError) else error
        source = "it" if _file_url(url) == url else _file_url(url)
        raise WeightsUnavailable(
            f"{path}: cannot download {source} ({' '.join(str(reason).split())}); without internet, "
            f"put the file at {cache_path(url)} by hand and run again") from None
    finally:
        socket.setdefaulttimeout(previous)


class _LateStream(io.TextIOBase):
    """stderr that holds back what is written in the first seconds: the download's progress bar
    shows when a download takes time, and an attempt that fails at once (offline) leaves only
    its one-line error."""

    def __init__(self, stream, seconds: float = 2.0):
        self.stream, self.shown_from, self.held = stream, time.monotonic() + seconds, []

    def write(self, text):
        self.held.append(text)
        if time.monotonic() >= self.shown_from:
            self.stream.write("".join(self.held))
            self.held = []
        return len(text)

    def flush(self):
        if not self.held:
            self.stream.flush()


def is_torchvision_resnet(state_dict: Dict[str, torch.Tensor]) -> bool:
    return "layer1.0.conv1.weight" in state_dict and "conv1.weight" in state_dict


def is_torchvision_vgg(state_dict: Dict[str, torch.Tensor]) -> bool:
    return "features.0.weight" in state_dict


def convert_torchvision_resnet(state_dict: Dict[str, torch.Tensor], prefix: str = BOTTOM_UP):
    """torchvision ResNet names -> Detectron2 ResNet names (``layer1`` is ``res2``, ...).

    The converted model expects RGB input with ImageNet mean/std and ``STRIDE_IN_1X1 False``.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        name = re.sub(r"^conv1\.", "stem.conv1.", key)
        name = re.sub(r"^bn1\.", "stem.conv1.norm.", name)
        name = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", name)
        name = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", name)
        name = name.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        converted[prefix + name] = value
    return converted


def convert_torchvision_vgg(state_dict: Dict[str, torch.Tensor], prefix: str = BOTTOM_UP):
    """torchvision VGG ``features.N`` -> this project's ``stage{K}.conv{M}`` (see modeling/vgg.py).

    Works for plain VGG (conv, ReLU, ..., pool) and ``_bn`` VGG (conv, BN, ReLU); the VGG
    must be built with the same depth and ``MODEL.VGG.NORM`` "" or "BN" respectively. The
    classifier is dropped.
    """
    indices = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("features.")})
    convs = [i for i in indices if state_dict[f"features.{i}.weight"].dim() == 4]
    batch_norm = any(i + 1 in indices for i in convs)
    # Inside a block convs are `step` apart (conv, [BN,] ReLU); a max-pool between two convs
    # makes the gap one longer, which is where a new block starts.
    step = min(b - a for a, b in zip(convs, convs[1:]))
    converted, block, conv_in_block = {}, 1, 0
    for n, i in enumerate(convs):
        if n > 0 and i - convs[n - 1] > step:
            block, conv_in_block = block + 1, 0
        conv_in_block += 1
        base = f"{prefix}stage{block}.conv{conv_in_block}."
        converted[base + "weight"] = state_dict[f"features.{i}.weight"]
        converted[base + "bias"] = state_dict[f"features.{i}.bias"]
        if batch_norm:
            for k in _BN_KEYS:
                converted[base + "norm." + k] = state_dict[f"features.{i + 1}.{k}"]
    return converted


class SharpCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that also reads torchvision ResNet/VGG ImageNet state dicts, from a
    local file or from a URL (Detectron2's own loader fetches it through PathManager's cache)."""

    def _torch_load(self, f):
        loaded = torch.load(f, map_location="cpu", weights_only=True)
        state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
        if is_torchvision_resnet(state):
            return {"model": convert_torchvision_resnet(state), "__author__": "torchvision"}
        if is_torchvision_vgg(state):
            return {"model": convert_torchvision_vgg(state), "__author__": "torchvision"}
        return loaded
