"""Which classes the network confuses: ``val/confusion_matrix`` and ``test/confusion_matrix``, over every image."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torchmetrics.classification import MulticlassConfusionMatrix

from lightning_cnn.callbacks.figures import confusion_matrix_figure
from lightning_cnn.callbacks.tensorboard import (
    DashboardCallback,
    batch_logits,
    class_names,
    images_and_labels,
    tensorboard_logger,
)


class ConfusionMatrix(DashboardCallback):
    """Logs the confusion matrix of each drawn validation epoch and of each test, reduced across devices.

    It is updated on the device from the logits the evaluation step returns (no host sync per batch).
    """

    def __init__(self) -> None:
        self._confusion: MulticlassConfusionMatrix | None = None
        self._updated = False

    def _start(self) -> None:
        if self._confusion is not None:
            self._confusion.reset()
        self._updated = False

    def _update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any) -> None:
        pair = images_and_labels(batch)
        if pair is None or trainer.sanity_checking or not self.drawing(trainer):
            return
        images, labels = pair
        logits = batch_logits(pl_module, outputs, images)
        predictions = logits.argmax(dim=1)
        if self._confusion is None:
            # validate_args=False: argument checks would sync with the host on every batch.
            self._confusion = MulticlassConfusionMatrix(logits.shape[1], validate_args=False)
        if self._confusion.device != predictions.device:
            self._confusion = self._confusion.to(predictions.device)
        self._confusion.update(predictions, labels)
        self._updated = True

    def _draw(self, trainer: pl.Trainer, split: str) -> None:
        if not self._updated:
            return
        # Reduced across processes, so every rank computes it; rank zero draws.
        confusion = self._confusion.compute()
        if not trainer.is_global_zero:
            return
        with self.timed():
            figure = confusion_matrix_figure(confusion.cpu(), class_names(trainer))
            tensorboard_logger(trainer).experiment.add_figure(f"{split}/confusion_matrix", figure, trainer.global_step)

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
        self._draw(trainer, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, "test")
