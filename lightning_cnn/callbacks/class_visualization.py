"""What the network sees in each class, at the end of fit: the ``class_visualization`` grid, one image per class.

Made by regularised gradient ascent on the input (:func:`lightning_cnn.analysis.class_images.class_images`)
and saved as ``class_visualization.png`` in the run folder too, for the report. It gets what is
left of the image budget at the end of training: the ascent stops when that is spent.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.utilities import rank_zero_info
from torchvision.utils import make_grid, save_image

from lightning_cnn.analysis.class_images import class_images
from lightning_cnn.callbacks.explain_table import run_folder
from lightning_cnn.callbacks.figures import displayable, upscale
from lightning_cnn.callbacks.tensorboard import DashboardCallback, denormalize, tensorboard_logger
from lightning_cnn.data import ImageDataModule
from lightning_cnn.data.base import per_channel
from lightning_cnn.runs.tags import CLASS_VISUALIZATION_FILENAME, CLASS_VISUALIZATION_TAG

# Fewer steps than this give blurred noise: the image is then not drawn at all.
MIN_STEPS = 16


class ClassVisualization(DashboardCallback):
    """At the end of fit, logs one input per class that the network scores highest as that class.

    Must run before the budget's own end of training (:class:`~lightning_cnn.callbacks.dashboard.Dashboard`
    lists it first), so that its time counts in ``time/insight_seconds``.

    Args:
        steps: gradient-ascent steps at most (fewer when the image budget runs out).
    """

    def __init__(self, steps: PositiveInt = 128) -> None:
        self.steps = steps
        self._train_start: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start = time.perf_counter()

    def deadline(self) -> float | None:
        """When the images' share of the training time so far is spent (None: no limit)."""
        if self.budget is None or self.budget.time_budget >= 1 or self._train_start is None:
            return None
        now = time.perf_counter()
        left = self.budget.time_budget * (now - self._train_start) - self.budget.image_seconds
        # A fifth kept in hand: the step under way and drawing the grid run past the last check.
        return now + 0.8 * left

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        input_shape = getattr(pl_module.hparams, "input_shape", None)
        if logger is None or not trainer.is_global_zero or input_shape is None:
            return
        deadline = self.deadline()
        with self.timed():
            low, high = pixel_range(trainer, pl_module)
            num_classes = int(pl_module.hparams.num_classes)
            images, taken = class_images(
                pl_module, num_classes, tuple(input_shape), low, high, steps=self.steps, deadline=deadline
            )
            if taken < min(MIN_STEPS, self.steps):
                rank_zero_info(
                    f"insight: class visualization skipped after {taken} steps to keep the images under "
                    f"{self.budget.time_budget:.0%} of the training time (insight.time_budget)"
                )
                return
            pixels = upscale(displayable(denormalize(trainer, images)).cpu())
            grid = make_grid(pixels, nrow=min(num_classes, 10), padding=2, pad_value=1.0)
            logger.experiment.add_image(CLASS_VISUALIZATION_TAG, grid, trainer.global_step)
            folder = run_folder(trainer)
            if folder is not None:
                save_image(grid, folder / CLASS_VISUALIZATION_FILENAME)


def pixel_range(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's inputs for a black and a white pixel, per channel (``(x − mean)/std`` of 0 and 1)."""
    like = torch.zeros(1, device=pl_module.device)
    data = trainer.datamodule
    if not isinstance(data, ImageDataModule):
        return torch.tensor(-3.0), torch.tensor(3.0)  # normalized data rarely lies beyond 3 standard deviations
    mean, std = per_channel(data.mean, like), per_channel(data.std, like)
    return (0 - mean) / std, (1 - mean) / std
