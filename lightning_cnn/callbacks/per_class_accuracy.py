"""Accuracy of each class: ``val/acc_class/<class name>`` and ``test/acc_class/<class name>``, and a bar chart.

Updated on the device from the logits the evaluation step returns and reduced across devices, so
every rank computes it; rank zero logs. The scalars are logged every epoch (they cost a division),
the bar chart (``val/accuracy_by_class``, ``test/accuracy_by_class``) when the images are drawn.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_cnn.callbacks.figures import accuracy_bar_figure
from lightning_cnn.callbacks.tensorboard import (
    DashboardCallback,
    batch_logits,
    class_names,
    images_and_labels,
    tensorboard_logger,
)
from lightning_cnn.runs.tags import PER_CLASS_ACCURACY_IMAGE, PER_CLASS_ACCURACY_PREFIX


class PerClassAccuracy(DashboardCallback):
    """Logs each class's accuracy (its recall: the share of its images predicted as it) per validation and test."""

    def __init__(self) -> None:
        self._accuracy: MulticlassAccuracy | None = None
        self._updated = False

    def _start(self) -> None:
        if self._accuracy is not None:
            self._accuracy.reset()
        self._updated = False

    def _update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any) -> None:
        pair = images_and_labels(batch)
        if pair is None or trainer.sanity_checking:
            return
        images, labels = pair
        logits = batch_logits(pl_module, outputs, images)
        if self._accuracy is None:
            # validate_args=False: argument checks would sync with the host on every batch.
            self._accuracy = MulticlassAccuracy(logits.shape[1], average=None, validate_args=False)
        if self._accuracy.device != logits.device:
            self._accuracy = self._accuracy.to(logits.device)
        self._accuracy.update(logits.argmax(dim=1), labels)
        self._updated = True

    def _log(self, trainer: pl.Trainer, split: str) -> None:
        if not self._updated:
            return
        accuracy: Tensor = self._accuracy.compute().cpu()  # reduced across processes: every rank computes it
        if not trainer.is_global_zero:
            return
        names = class_names(trainer) or [str(label) for label in range(len(accuracy))]
        metrics = {
            f"{split}/{PER_CLASS_ACCURACY_PREFIX}/{name}": float(value)
            for name, value in zip(names, accuracy, strict=False)
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if self.drawing(trainer):
            with self.timed():
                figure = accuracy_bar_figure(accuracy, names)
                writer = tensorboard_logger(trainer).experiment
                writer.add_figure(f"{split}/{PER_CLASS_ACCURACY_IMAGE}", figure, trainer.global_step)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update(trainer, pl_module, outputs, batch)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update(trainer, pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, "test")
