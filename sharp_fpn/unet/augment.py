"""The seed's training augmentation (§3.3), on batched tensors, on any device.

RandomRotate90, Flip, then one of (HSV colour shift, brightness-contrast change), then
Normalization. Written for (N, C, H, W) batches with independent draws per image, so a GPU
loop augments whole batches where they are and a per-image Detectron2 mapper passes N = 1.
Colour ops are linear in RGB: the hue turn and saturation scale act on the chroma plane of
YIQ (a rotation about the grey axis), which approximates an HSV hue/saturation shift.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .data import PIXEL_MEAN, PIXEL_STD

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)

HUE_DEGREES = 20.0  # hue turn drawn from +-20 degrees
SATURATION = 0.3  # saturation scale from 1 +- 0.3
VALUE = 20 / 255  # value (brightness) shift from +-20 grey levels, as albumentations' HSV
BRIGHTNESS = 0.2  # brightness-contrast: x * (1 + c) + b, c and b from +-0.2
CONTRAST = 0.2


def _uniform(n: int, limit: float, generator, device) -> Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * limit


def rotate_flip(images: Tensor, masks: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Per image: a random multiple of 90 degrees (square images only), then random
    horizontal and vertical flips; the masks follow their images."""
    n, device = images.shape[0], images.device
    images, masks = images.clone(), masks.clone()
    if images.shape[-1] == images.shape[-2]:
        turns = torch.randint(0, 4, (n,), generator=generator, device=device)
        for k in range(1, 4):
            chosen = turns == k
            if chosen.any():
                images[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
                masks[chosen] = torch.rot90(masks[chosen], k, dims=(-2, -1))
    for dim in (-1, -2):
        chosen = torch.rand(n, generator=generator, device=device) < 0.5
        if chosen.any():
            images[chosen] = images[chosen].flip(dim)
            masks[chosen] = masks[chosen].flip(dim)
    return images, masks


def colour_jitter(images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Per image, one of: HSV-like shift (hue turn, saturation scale, value shift) or
    brightness-contrast change. ``images`` RGB in [0, 1]; the result is clipped to [0, 1]."""
    n, device, dtype = images.shape[0], images.device, images.dtype
    angle = _uniform(n, math.radians(HUE_DEGREES), generator, device).to(dtype)
    scale = 1 + _uniform(n, SATURATION, generator, device).to(dtype)
    chroma = torch.zeros(n, 3, 3, device=device, dtype=dtype)
    chroma[:, 0, 0] = 1
    chroma[:, 1, 1] = chroma[:, 2, 2] = scale * angle.cos()
    chroma[:, 1, 2] = -scale * angle.sin()
    chroma[:, 2, 1] = scale * angle.sin()
    colour = _YIQ_TO_RGB.to(device, dtype) @ chroma @ _RGB_TO_YIQ.to(device, dtype)  # (n, 3, 3) in RGB
    hsv = torch.einsum("nij,njhw->nihw", colour, images) + _uniform(n, VALUE, generator, device).view(-1, 1, 1, 1)

    gain = 1 + _uniform(n, CONTRAST, generator, device).view(-1, 1, 1, 1)
    bias = _uniform(n, BRIGHTNESS, generator, device).view(-1, 1, 1, 1)
    brightness_contrast = images * gain + bias

    use_hsv = (torch.rand(n, generator=generator, device=device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(use_hsv, hsv, brightness_contrast).clamp(0, 1)


def augment(images: Tensor, masks: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """The seed's augmentation for RGB ``images`` in [0, 1] (N, 3, H, W) and ``masks``
    (N, 1, H, W): rotate/flip, then the colour change."""
    images, masks = rotate_flip(images, masks, generator)
    return colour_jitter(images, generator), masks


def normalize(images: Tensor, mean: Sequence[float] = PIXEL_MEAN, std: Sequence[float] = PIXEL_STD) -> Tensor:
    """0..255 RGB (N, 3, H, W) to the network's input scale."""
    mean_t = torch.as_tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t
