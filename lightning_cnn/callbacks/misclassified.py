"""What the network gets wrong: ``val/misclassified`` and ``test/misclassified``, with predicted and true labels,
and in red the pixels that made it predict so (Integrated Gradients from a black image)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from jsonargparse.typing import PositiveInt
from torch import Tensor

from lightning_cnn.analysis.class_images import integrated_gradients
from lightning_cnn.callbacks.class_visualization import pixel_range
from lightning_cnn.callbacks.figures import misclassified_figure, wrong_indices
from lightning_cnn.callbacks.tensorboard import (
    EvaluationDashboard,
    batch_logits,
    class_names,
    denormalize,
    images_and_labels,
    tensorboard_logger,
)


class Misclassified(EvaluationDashboard):
    """Logs the misclassified examples of the first validation (and test) batch, drawn at the epoch end.

    The predictions come from the logits the evaluation step returns, so no batch is run twice.

    Args:
        num_misclassified: at most this many examples per figure.
        saliency: lay each example's Integrated-Gradients map for its predicted class over it.
    """

    def __init__(self, num_misclassified: PositiveInt = 16, saliency: bool = True) -> None:
        self.num_misclassified, self.saliency = num_misclassified, saliency
        self._first_batch: tuple[Tensor, Tensor, Tensor] | None = None  # images, labels, predictions

    def evaluation_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, split: str
    ) -> None:
        pair = images_and_labels(batch) if batch_idx == 0 and trainer.is_global_zero else None
        if pair is None or trainer.sanity_checking or not self.drawing(trainer):
            return
        images, labels = pair
        self._first_batch = (images, labels, batch_logits(pl_module, outputs, images).argmax(dim=1))

    def end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        first, self._first_batch = self._first_batch, None
        if first is None:
            return
        images, labels, predictions = first
        with self.timed():
            saliency = None
            wrong = wrong_indices(labels, predictions, self.num_misclassified).to(images.device)
            if self.saliency and len(wrong):
                low, _ = pixel_range(trainer, pl_module)
                saliency = integrated_gradients(pl_module, images[wrong], predictions[wrong], low)
            figure = misclassified_figure(
                denormalize(trainer, images),
                labels,
                predictions,
                self.num_misclassified,
                class_names(trainer),
                saliency,
            )
            tensorboard_logger(trainer).experiment.add_figure(f"{split}/misclassified", figure, trainer.global_step)
