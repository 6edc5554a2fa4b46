"""The learning rate of each optimizer, logged in the training group (``train/lr-Adam``)."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class LearningRateLogger(Callback):
    """Logs every optimizer's learning rate as ``train/lr-<Optimizer>`` (``/pg<n>`` for several parameter groups).

    Args:
        logging_interval: ``step`` (every ``trainer.log_every_n_steps`` steps), ``epoch``, or None: per step
            when a scheduler steps per step, otherwise per epoch.
        log_momentum: also log the momentum (Adam's beta1) as ``train/lr-<Optimizer>-momentum``.
        log_weight_decay: also log the weight decay as ``train/lr-<Optimizer>-weight_decay``.
    """

    def __init__(
        self,
        logging_interval: Literal["step", "epoch"] | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        self.logging_interval, self.log_momentum, self.log_weight_decay = (
            logging_interval,
            log_momentum,
            log_weight_decay,
        )

    def _interval(self, trainer: pl.Trainer) -> str:
        if self.logging_interval is not None:
            return self.logging_interval
        stepped = any(config.interval == "step" for config in trainer.lr_scheduler_configs)
        return "step" if stepped else "epoch"

    def learning_rates(self, trainer: pl.Trainer) -> dict[str, float]:
        """The current values, by tag."""
        values: dict[str, float] = {}
        for optimizer in trainer.optimizers:
            name = f"train/lr-{type(optimizer).__name__}"
            while any(tag == name or tag.startswith(f"{name}/") for tag in values):
                name += "-1"  # a second optimizer of the same kind
            groups = optimizer.param_groups
            for index, group in enumerate(groups):
                tag = name if len(groups) == 1 else f"{name}/pg{index + 1}"
                values[tag] = float(group["lr"])
                if self.log_momentum:
                    momentum = group.get("momentum", (group.get("betas") or (None,))[0])
                    if momentum is not None:
                        values[f"{tag}-momentum"] = float(momentum)
                if self.log_weight_decay and "weight_decay" in group:
                    values[f"{tag}-weight_decay"] = float(group["weight_decay"])
        return values

    def _log(self, trainer: pl.Trainer) -> None:
        values = self.learning_rates(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        due = (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1) == 0  # as Lightning's logging steps
        if due and trainer.loggers and self._interval(trainer) == "step":
            self._log(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.loggers and self._interval(trainer) == "epoch":
            self._log(trainer)
