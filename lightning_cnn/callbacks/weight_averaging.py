"""Weight averaging, switched on in YAML: an exponential moving average of the weights (``ema.decay``).

Lightning's ``EMAWeightAveraging`` keeps the average: validation runs on it, training ends with it,
and every checkpoint holds it as its ``state_dict`` (so ``test``, ``predict`` and ``export`` use it),
with the raw weights beside it (``current_model_state``) so that ``fit --ckpt_path last`` continues
both. The checkpoint also says which weights its ``state_dict`` holds (``weights``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval
from lightning.pytorch.callbacks import EMAWeightAveraging

WEIGHTS_KEY = "weights"  # in a checkpoint: which weights its state_dict holds


class AveragedWeights(EMAWeightAveraging):
    """Lightning's EMA callback, recording in each checkpoint that its ``state_dict`` holds the average."""

    def __init__(self, decay: float, start_step: int = 0) -> None:
        # Plain numbers: a checkpoint holding jsonargparse's number types would not load with weights_only.
        decay, start_step = float(decay), int(start_step)
        super().__init__(decay=decay, update_starting_at_step=start_step)
        self.decay, self.start_step = decay, start_step

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        checkpoint[WEIGHTS_KEY] = {"kind": "ema", "decay": self.decay, "start_step": self.start_step}


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
