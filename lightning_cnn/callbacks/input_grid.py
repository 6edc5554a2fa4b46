"""The training inputs as the network sees them: ``train/inputs``, a grid of the epoch's first batch, de-normalized."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from jsonargparse.typing import PositiveInt
from torch import Tensor
from torchvision.utils import make_grid

from lightning_cnn.callbacks.figures import displayable
from lightning_cnn.callbacks.tensorboard import DashboardCallback, denormalize, images_and_labels, tensorboard_logger


class InputGrid(DashboardCallback):
    """Logs ``train/inputs`` at the end of each drawn epoch: the first training batch, augmented as trained on.

    Args:
        num_inputs: how many training inputs the grid shows (8 per row).
    """

    def __init__(self, num_inputs: PositiveInt = 32) -> None:
        self.num_inputs = num_inputs
        self._inputs: Tensor | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # A reference to the first batch only (no copy, no host sync); drawn at the epoch end.
        pair = images_and_labels(batch) if batch_idx == 0 else None
        if pair is not None:
            self._inputs = pair[0][: self.num_inputs].detach()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        inputs, self._inputs = self._inputs, None
        if inputs is None or not trainer.is_global_zero or not self.drawing(trainer):
            return
        with self.timed():
            grid = make_grid(displayable(denormalize(trainer, inputs).cpu()), nrow=8, padding=2, pad_value=1.0)
            tensorboard_logger(trainer).experiment.add_image("train/inputs", grid, trainer.global_step)
