"""Lightning's Rich progress bar, naming the run folder instead of Lightning's version number, and updated at
most a few times a second during training."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar

from lightning_cnn.runs.folders import run_folder_name

UPDATES_PER_SECOND = 4


class RunProgressBar(RichProgressBar):
    """Lightning's Rich bar, naming the run folder (``run: version_3``) where Lightning shows ``v_num: 3.000``.

    Lightning updates the bar's count and metrics after every training batch, about 80 us of Python
    each (benchmarks/attribution.py), a percent of a small network's step on a CPU; here it is updated
    at most ``UPDATES_PER_SECOND`` times a second, and at the epoch's last batch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 (RichProgressBar's own arguments)
        super().__init__(*args, **kwargs)
        self._last_update = 0.0

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | str | float | dict]:
        metrics = super().get_metrics(trainer, pl_module)
        if metrics.pop("v_num", None) is not None and trainer.logger is not None:
            metrics = {"run": run_folder_name(trainer.logger.version), **metrics}
        return metrics

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if now - self._last_update >= 1 / UPDATES_PER_SECOND or batch_idx + 1 >= self.total_train_batches:
            self._last_update = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
