"""Accuracy of each class: ``val/acc_class/<class name>`` and ``test/acc_class/<class name>``, and a bar chart.

Updated on the device from the logits the evaluation step returns and reduced across devices, so
every rank computes it; rank zero logs. The scalars are logged every epoch (they cost a division),
the bar chart (``val/accuracy_by_class``, ``test/accuracy_by_class``) when the images are drawn.
"""

from __future__ import annotations

import lightning.pytorch as pl
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_cnn.callbacks.figures import accuracy_bar_figure
from lightning_cnn.callbacks.tensorboard import ClassCounts, class_names, tensorboard_logger
from lightning_cnn.runs.tags import PER_CLASS_ACCURACY_IMAGE, PER_CLASS_ACCURACY_PREFIX


class PerClassAccuracy(ClassCounts):
    """Logs each class's accuracy (its recall: the share of its images predicted as it) per validation and test."""

    def make_metric(self, num_classes: int) -> MulticlassAccuracy:
        # validate_args=False: argument checks would sync with the host on every batch.
        return MulticlassAccuracy(num_classes, average=None, validate_args=False)

    def end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        accuracy: Tensor | None = self.computed()
        if accuracy is None or not trainer.is_global_zero:
            return
        accuracy = accuracy.cpu()
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
