"""Which classes the network confuses: ``val/confusion_matrix`` and ``test/confusion_matrix``, over every image."""

from __future__ import annotations

import lightning.pytorch as pl
from torchmetrics.classification import MulticlassConfusionMatrix

from lightning_cnn.callbacks.figures import confusion_matrix_figure
from lightning_cnn.callbacks.tensorboard import ClassCounts, class_names, tensorboard_logger


class ConfusionMatrix(ClassCounts):
    """Logs the confusion matrix of each drawn validation epoch and of each test, reduced across devices.

    It is updated on the device from the logits the evaluation step returns (no host sync per batch).
    """

    def make_metric(self, num_classes: int) -> MulticlassConfusionMatrix:
        # validate_args=False: argument checks would sync with the host on every batch.
        return MulticlassConfusionMatrix(num_classes, validate_args=False)

    def counts(self, trainer: pl.Trainer) -> bool:
        return self.drawing(trainer)

    def end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        confusion = self.computed()  # reduced across processes, so every rank computes it; rank zero draws
        if confusion is None or not trainer.is_global_zero:
            return
        with self.timed():
            figure = confusion_matrix_figure(confusion.cpu(), class_names(trainer))
            tensorboard_logger(trainer).experiment.add_figure(f"{split}/confusion_matrix", figure, trainer.global_step)
