"""The size of a network's flattened features for a given input, so that no layer hard-codes it."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lightning_cnn.errors import UserError

# One side length for square images, or (height, width).
ImageSize = int | tuple[int, int]


class ImageTooSmallError(UserError, ValueError):
    """The input images are too small for the network's convolutions and poolings (a ValueError too)."""


def height_width(image_size: ImageSize) -> tuple[int, int]:
    """``image_size`` as ``(height, width)``."""
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def flat_features(layers: OrderedDict[str, nn.Module], in_channels: int, image_size: ImageSize) -> int:
    """How many features ``layers`` (the network up to its flatten) produce for one image of this size.

    Found by passing one blank image through the layers once, at construction: the arithmetic of
    kernels, paddings and poolings then lives in one place, the layers themselves. (No layer here
    keeps running statistics, and the training mode is left as it is: dropout maps zeros to zeros.)
    """
    height, width = height_width(image_size)
    trunk = nn.Sequential(OrderedDict(layers))
    try:
        with torch.no_grad():
            features = trunk(torch.zeros(1, in_channels, height, width))
    except RuntimeError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageTooSmallError(
            f"images of {in_channels}x{height}x{width} are too small for this network ({reason}); "
            "use larger images (data.image_size) or another network"
        ) from None
    return features[0].numel()
