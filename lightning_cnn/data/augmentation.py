"""Random affine augmentation applied to a whole batch of images at once, on their device."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
)
from torch import Tensor


@dataclass
class Augmentation:
    """Random affine transforms drawn per image and applied to a whole training batch at once.

    Args:
        degrees: maximum rotation, in degrees, either way.
        translate: maximum shift as a fraction of the image size, along each axis.
        scale: maximum relative zoom in or out (0.1 draws a scale in [0.9, 1.1]).
    """

    degrees: NonNegativeFloat = 10.0
    translate: ClosedUnitInterval = 0.1
    scale: ClosedUnitInterval = 0.1

    def __call__(self, images: Tensor) -> Tensor:
        n = images.shape[0]
        device, dtype = images.device, images.dtype

        def uniform(bound: float) -> Tensor:
            return (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * bound

        angle = uniform(math.radians(self.degrees))
        zoom = 1 + uniform(self.scale)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # affine_grid maps output to input coordinates in [-1, 1], so a shift of t pixels-fraction is 2t.
        theta = torch.stack(
            [
                torch.stack([cos, -sin, uniform(2 * self.translate)], dim=1),
                torch.stack([sin, cos, uniform(2 * self.translate)], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
