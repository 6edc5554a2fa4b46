"""Training time, and the share of it that the dashboard images may take.

``ImageBudget`` decides at each epoch start whether the image callbacks draw this epoch, counts
what they cost, and logs ``time/train_seconds``, ``time/insight_seconds`` and
``time/insight_skipped_epochs`` at the end of training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch as pl
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_cnn.runs.tags import INSIGHT_SECONDS_TAG, INSIGHT_SKIPPED_TAG, TRAIN_SECONDS_TAG


class ImageBudget(Callback):
    """Times training, and keeps the dashboard images under ``time_budget`` of it.

    Args:
        every_n_epochs: draw the images at the end of every n-th epoch.
        time_budget: most fraction of the training time the images may take; an epoch whose turn
            comes while they have cost more so far is skipped (the first is always drawn, so 0 draws
            only the first). 1 turns the limit off.
    """

    def __init__(self, every_n_epochs: PositiveInt = 1, time_budget: ClosedUnitInterval = 0.03) -> None:
        self.every_n_epochs, self.time_budget = every_n_epochs, time_budget
        self.drawing = True  # whether the image callbacks draw in the current epoch
        self.image_seconds = 0.0
        self.skipped_epochs = 0
        self._train_start: float | None = None

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Counts the time spent inside against the budget."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.image_seconds += time.perf_counter() - started

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.drawing = True  # validate and test draw once; fit decides per epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start = time.perf_counter()
        self.image_seconds, self.skipped_epochs = 0.0, 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            self.drawing = False
            return
        within_budget = True
        if self._train_start is not None and self.time_budget < 1:
            elapsed = time.perf_counter() - self._train_start
            within_budget = self.image_seconds <= self.time_budget * elapsed
        # Rank zero alone draws and times; every rank must agree, as the confusion matrix is reduced across them.
        self.drawing = bool(trainer.strategy.broadcast(within_budget, src=0))
        if not self.drawing:
            self.skipped_epochs += 1
            if self.skipped_epochs == 1:
                rank_zero_info(
                    f"insight: images skipped at epoch {trainer.current_epoch} to keep them under "
                    f"{self.time_budget:.0%} of the training time (insight.time_budget)"
                )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._train_start is None:
            return
        seconds = time.perf_counter() - self._train_start
        self._train_start = None
        metrics = {
            TRAIN_SECONDS_TAG: seconds,
            INSIGHT_SECONDS_TAG: self.image_seconds,
            INSIGHT_SKIPPED_TAG: self.skipped_epochs,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
