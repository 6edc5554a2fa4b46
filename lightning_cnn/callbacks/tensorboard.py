"""What every dashboard callback shares: the run's TensorBoard logger, class names and images for display."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_cnn.callbacks.image_budget import ImageBudget
from lightning_cnn.data import ImageDataModule


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoard logger, or None when the run logs elsewhere (or not at all)."""
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def class_names(trainer: pl.Trainer) -> list[str] | None:
    """The data's class names (the data contract), or None for a data module without it (labels shown as numbers)."""
    return trainer.datamodule.class_names if isinstance(trainer.datamodule, ImageDataModule) else None


def denormalize(trainer: pl.Trainer, images: Tensor) -> Tensor:
    """Images back on the [0, 1] pixel scale, undoing the data module's normalization."""
    if isinstance(trainer.datamodule, ImageDataModule):
        return trainer.datamodule.denormalize(images)
    images = images.detach().float()  # a data module without the contract: stretch each batch for display
    low, high = images.amin(), images.amax()
    return (images - low) / (high - low).clamp_min(1e-12)


def images_and_labels(batch: Any) -> tuple[Tensor, Tensor] | None:
    """A batch of ``(images, labels)``, or None for any other shape of batch."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(part, Tensor) for part in batch):
        return batch[0], batch[1]
    return None


def batch_logits(pl_module: pl.LightningModule, outputs: Any, images: Tensor) -> Tensor:
    """The logits the evaluation step returned (``{"logits": ...}``), or computed for a module that returns none."""
    logits = outputs.get("logits") if isinstance(outputs, dict) else None
    if isinstance(logits, Tensor) and logits.shape[0] == images.shape[0]:
        return logits
    with torch.no_grad():
        return pl_module(images)


class DashboardCallback(Callback):
    """Base of the image callbacks: each draws when the run logs to TensorBoard and its budget allows.

    ``budget`` is the run's shared :class:`~lightning_cnn.callbacks.image_budget.ImageBudget` (set by
    :class:`~lightning_cnn.callbacks.dashboard.Dashboard`); without one, a callback draws at every
    epoch end.
    """

    budget: ImageBudget | None = None

    def drawing(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch's images are drawn (on every rank alike, as some are reduced across ranks)."""
        return tensorboard_logger(trainer) is not None and (self.budget is None or self.budget.drawing)

    def timed(self) -> AbstractContextManager[None]:
        """Counts the time spent inside against the budget."""
        return self.budget.timed() if self.budget is not None else nullcontext()
