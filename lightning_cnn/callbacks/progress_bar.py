"""Lightning's Rich progress bar, naming the run folder instead of Lightning's version number."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar

from lightning_cnn.runs.folders import (
    run_folder_name,
)


class RunProgressBar(RichProgressBar):
    """Lightning's Rich bar, naming the run folder (``run: version_3``) where Lightning shows ``v_num: 3.000``."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | str | float | dict]:
        metrics = super().get_metrics(trainer, pl_module)
        if metrics.pop("v_num", None) is not None and trainer.logger is not None:
            metrics = {"run": run_folder_name(trainer.logger.version), **metrics}
        return metrics
