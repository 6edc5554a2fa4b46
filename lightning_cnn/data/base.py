"""The data contract: what the model, the callbacks and the CLI need from any dataset of labelled images."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor

# One value for every channel, or one per channel.
ChannelValues = float | Sequence[float]


def per_channel(values: ChannelValues, like: Tensor) -> Tensor:
    """``values`` shaped to broadcast over the channels of an ``(N, C, H, W)`` batch like ``like``."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1, 1, 1)


class ImageDataModule(pl.LightningDataModule):
    """What the model, the callbacks and the CLI need from a dataset of labelled images.

    Subclass it for a new dataset and choose it with ``data.class_path``; nothing else in the
    package needs to change. Batches are ``(images, labels)``, images normalized as the network
    sees them; predict batches are ``(images, row indices into predict_names)``.

    Attributes:
        num_classes: number of classes (linked to ``model.num_classes``).
        image_shape: ``(channels, height, width)`` of one image (linked to ``model.input_shape``).
        batch_size: training batch size per device.
        mean, std: the normalization, on the [0, 1] pixel scale: the network sees ``(pixels / 255 - mean) / std``;
            one float for every channel, or one value per channel.
        predict_names: one name per predicted row (a file path, or a dataset index), set by ``setup("predict")``.
        predict_failures: the input files that could not be read and were skipped.
    """

    num_classes: int = 10
    image_shape: tuple[int, int, int] = (1, 28, 28)
    batch_size: int = 64
    mean: ChannelValues = 0.0
    std: ChannelValues = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.predict_names: list[str] = []
        self.predict_failures: list[str] = []

    @property
    def class_names(self) -> list[str]:
        """The name of each class, by label (axes, captions, CSV columns); the label numbers by default."""
        return [str(label) for label in range(self.num_classes)]

    @property
    def has_validation(self) -> bool:
        """False when no validation images are held out (nothing is validated; checkpoints: last only)."""
        return True

    def denormalize(self, images: Tensor) -> Tensor:
        """Images as the network sees them, back on the [0, 1] pixel scale for display."""
        images = images.detach().float()
        return (images * per_channel(self.std, images) + per_channel(self.mean, images)).clamp(0, 1)

    def check_inputs(self, stage: str) -> None:
        """Raise a DataError for data that cannot serve ``stage``, before any run folder exists (cheap checks only)."""

    def recipe(self) -> dict[str, bool | int | float | str]:
        """The data side of the run's recipe, as flat values for the hparams tab and the run record."""
        return {"batch_size": self.batch_size}
