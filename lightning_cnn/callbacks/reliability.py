"""How well the network's confidence matches its accuracy: ``val/reliability`` (at the end of fit, from the
last validation) and ``test/reliability``, reliability diagrams over 15 confidence bins."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_cnn.callbacks.figures import reliability_figure
from lightning_cnn.callbacks.tensorboard import EvaluationDashboard, batch_logits, images_and_labels, tensorboard_logger
from lightning_cnn.module import CALIBRATION_BINS
from lightning_cnn.runs.tags import RELIABILITY_IMAGE


class ReliabilityDiagram(EvaluationDashboard):
    """Counts, per confidence bin, the images, their confidence and how many are right (on the device, summed
    across devices at the epoch end), and draws the diagram at the end of fit and at each test."""

    def __init__(self) -> None:
        self._sums: Tensor | None = None  # (3, bins): images, confidence, correct
        self._last_validation: Tensor | None = None

    def start_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        self._sums = None

    def evaluation_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, split: str
    ) -> None:
        pair = images_and_labels(batch)
        if pair is None or trainer.sanity_checking:
            return
        images, labels = pair
        confidence, predicted = batch_logits(pl_module, outputs, images).detach().float().softmax(dim=1).max(dim=1)
        bins = (confidence * CALIBRATION_BINS).ceil().long().clamp(1, CALIBRATION_BINS) - 1
        if self._sums is None:
            self._sums = torch.zeros(3, CALIBRATION_BINS, device=confidence.device)
        self._sums[0].index_add_(0, bins, torch.ones_like(confidence))
        self._sums[1].index_add_(0, bins, confidence)
        self._sums[2].index_add_(0, bins, (predicted == labels).float())

    def end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        if trainer.sanity_checking or self._sums is None:
            return
        sums = trainer.strategy.reduce(self._sums, reduce_op="sum")  # every rank, alike
        if split == "val":
            self._last_validation = sums
        elif self.drawing(trainer):
            self._draw(trainer, sums, split)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_validation is not None:
            self._draw(trainer, self._last_validation, "val")
            self._last_validation = None

    def _draw(self, trainer: pl.Trainer, sums: Tensor, split: str) -> None:
        if not trainer.is_global_zero or tensorboard_logger(trainer) is None:
            return
        with self.timed():
            counts, confidence, correct = sums.cpu()
            figure = reliability_figure(counts, confidence, correct)
            tensorboard_logger(trainer).experiment.add_figure(
                f"{split}/{RELIABILITY_IMAGE}", figure, trainer.global_step
            )
