"""Weight averaging, switched on in YAML: an exponential moving average (``ema.decay``) or an equal-weight
stochastic weight average (``swa.start_epoch``) of the weights.

Both are Lightning's ``WeightAveraging`` callbacks (``EMAWeightAveraging`` for the EMA): validation runs
on the average, training ends with it, and every checkpoint holds it as its ``state_dict`` (so
``test``, ``predict`` and ``export`` use it), with the raw weights beside it (``current_model_state``)
so that ``fit --ckpt_path last`` continues both. The checkpoint also says which weights its
``state_dict`` holds (``weights``).

Until the first update (before ``ema.start_step`` or ``swa.start_epoch``) there is no average yet:
validation, checkpoints and the end of training use the raw weights, and say so.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging

from lightning_cnn.errors import UserError

WEIGHTS_KEY = "weights"  # in a checkpoint: which weights its state_dict holds
RAW_WEIGHTS = {"kind": "raw"}


class _Started:
    """Lightning's averaging callbacks, using the average only once it holds an update.

    Lightning's average starts as a copy of the untrained network: validated, saved or kept at the end of
    training before its first update, it would be the initial weights.
    """

    updates: int = 0  # updates of the average so far (kept in the checkpoint)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        update = self.wants_update(step_idx, epoch_idx)
        self.updates += bool(update)
        return update

    def wants_update(self, step_idx: int | None, epoch_idx: int | None) -> bool:
        """Whether to update now: Lightning's rule of the averaging callback, unless a subclass has its own."""
        return super().should_update(step_idx=step_idx, epoch_idx=epoch_idx)

    def description(self) -> dict[str, Any]:
        raise NotImplementedError

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.updates:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.updates:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.updates:
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.updates:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
        checkpoint[WEIGHTS_KEY] = {**self.description(), "updates": self.updates} if self.updates else RAW_WEIGHTS

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.updates = int(state_dict.get("updates", 0))


class AveragedWeights(_Started, EMAWeightAveraging):
    """Lightning's EMA callback: the average after every optimizer step from ``start_step`` on."""

    def __init__(self, decay: float, start_step: int = 0) -> None:
        # Plain numbers: a checkpoint holding jsonargparse's number types would not load with weights_only.
        decay, start_step = float(decay), int(start_step)
        super().__init__(decay=decay, update_starting_at_step=start_step)
        self.decay, self.start_step = decay, start_step

    def description(self) -> dict[str, Any]:
        return {"kind": "ema", "decay": self.decay, "start_step": self.start_step}


class StochasticAveragedWeights(_Started, WeightAveraging):
    """Stochastic weight averaging on Lightning's ``WeightAveraging``: the equal-weight mean of the weights
    after every optimizer step of epoch ``start_epoch`` (counted from 1) and after."""

    def __init__(self, start_epoch: int) -> None:
        super().__init__()  # no averaging function: Lightning's equal-weight average (SWA)
        self.start_epoch = int(start_epoch)
        self._epoch = 0  # the epoch being trained, counted from 1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch = trainer.current_epoch + 1  # read here: a fit resumed inside an epoch does not start it again
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def wants_update(self, step_idx: int | None, epoch_idx: int | None) -> bool:
        return step_idx is not None and self._epoch >= self.start_epoch

    def description(self) -> dict[str, Any]:
        return {"kind": "swa", "start_epoch": self.start_epoch}


class WeightAverage:
    """The ``ema.*`` settings.

    Args:
        decay: keep an exponential moving average of the weights with this decay per step (e.g. 0.999);
            validation, test, checkpoints, export and predict then use the average. null: off.
        start_step: start averaging at this optimizer step (the weights of the first steps are far from the end).
    """

    def __init__(self, decay: OpenUnitInterval | None = None, start_step: NonNegativeInt = 0) -> None:
        self.decay, self.start_step = decay, start_step

    def callback(self) -> AveragedWeights | None:
        return None if self.decay is None else AveragedWeights(self.decay, self.start_step)


class StochasticWeightAverage:
    """The ``swa.*`` settings.

    Args:
        start_epoch: average the weights (equal weights) after every optimizer step from this epoch on,
            counted from 1; validation, test, checkpoints, export and predict then use the average. Pair
            it with a schedule that keeps the learning rate up over the averaged epochs. null: off.
    """

    def __init__(self, start_epoch: PositiveInt | None = None) -> None:
        self.start_epoch = start_epoch

    def callback(self) -> StochasticAveragedWeights | None:
        return None if self.start_epoch is None else StochasticAveragedWeights(self.start_epoch)


def averaging_name(callbacks: list) -> str | None:
    """The averaging of a fit's callbacks in words (``EMA 0.999``, ``SWA from epoch 16``), None without one."""
    for callback in callbacks:
        if isinstance(callback, AveragedWeights):
            return f"EMA {callback.decay:g}" + (f" from step {callback.start_step}" if callback.start_step else "")
        if isinstance(callback, StochasticAveragedWeights):
            return f"SWA from epoch {callback.start_epoch}"
    return None


def averaging_callback(
    ema: WeightAverage, swa: StochasticWeightAverage, max_epochs: int | None = None
) -> WeightAveraging | None:
    """The one averaging callback the settings ask for (None: the raw weights)."""
    if ema.decay is not None and swa.start_epoch is not None:
        raise UserError(
            "ema.decay and swa.start_epoch both average the weights; keep one of them (set the other to null)"
        )
    if swa.start_epoch is not None and max_epochs is not None and 0 <= max_epochs < swa.start_epoch:
        raise UserError(
            f"swa.start_epoch={swa.start_epoch} comes after the last epoch (trainer.max_epochs={max_epochs}); "
            "set swa.start_epoch to at most trainer.max_epochs"
        )
    return ema.callback() or swa.callback()
