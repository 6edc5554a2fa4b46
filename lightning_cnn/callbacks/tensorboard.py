"""What every dashboard callback shares: the run's TensorBoard logger, class names and images for display."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics import Metric

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


class EvaluationDashboard(DashboardCallback):
    """Base of the callbacks that look at the validation and test batches: a start, each batch, an end, per split."""

    def start_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        """At the start of a validation or test epoch (``split`` is ``val`` or ``test``)."""

    def evaluation_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, split: str
    ) -> None:
        """After each batch, with what the evaluation step returned (``{"logits": ...}``)."""

    def end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        """At the end of a validation or test epoch."""

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_evaluation(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_evaluation(trainer, pl_module, "test")

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: int
    ) -> None:
        self.evaluation_batch(trainer, pl_module, outputs, batch, batch_idx, "val")

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: int
    ) -> None:
        self.evaluation_batch(trainer, pl_module, outputs, batch, batch_idx, "test")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end_evaluation(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end_evaluation(trainer, pl_module, "test")


class ClassCounts(EvaluationDashboard):
    """Base of the per-class views: a torchmetrics metric updated on the device from each evaluation batch's logits
    (no host sync per batch) and reduced across devices at the epoch end."""

    def __init__(self) -> None:
        self._metric: Metric | None = None
        self._updated = False

    def make_metric(self, num_classes: int) -> Metric:
        raise NotImplementedError

    def counts(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch's batches are counted (every rank decides alike)."""
        return True

    def start_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        if self._metric is not None:
            self._metric.reset()
        self._updated = False

    def evaluation_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, split: str
    ) -> None:
        pair = images_and_labels(batch)
        if pair is None or trainer.sanity_checking or not self.counts(trainer):
            return
        images, labels = pair
        logits = batch_logits(pl_module, outputs, images)
        if self._metric is None:
            self._metric = self.make_metric(logits.shape[1])
        if self._metric.device != logits.device:
            self._metric = self._metric.to(logits.device)
        self._metric.update(logits.argmax(dim=1), labels)
        self._updated = True

    def computed(self) -> Tensor | None:
        """The epoch's value, reduced across processes (every rank must call it); None when nothing was counted."""
        return self._metric.compute() if self._updated else None
