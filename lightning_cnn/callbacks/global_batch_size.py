"""The global batch size (per-device batch x processes x accumulation), logged when fit starts."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from lightning_cnn.data import ImageDataModule


class GlobalBatchSizeLogger(Callback):
    """Logs the global batch size (per-device batch x processes x gradient accumulation) when fit starts.

    It is the number of images behind each optimizer step, the one that learning rates relate to;
    it goes into ``hparams.yaml`` and the TensorBoard scalar ``global_batch_size``.
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(trainer.datamodule, ImageDataModule):
            return
        per_device = trainer.datamodule.batch_size
        processes, accumulation = trainer.world_size, trainer.accumulate_grad_batches
        global_batch_size = per_device * processes * accumulation
        rank_zero_info(
            f"Global batch size: {global_batch_size} = {per_device} per device x {processes} devices in all "
            f"x {accumulation} accumulated batches"
        )
        for logger in trainer.loggers:  # loggers write on rank zero only
            logger.log_hyperparams({"global_batch_size": global_batch_size, "world_size": processes})
            logger.log_metrics({"global_batch_size": global_batch_size}, step=0)
