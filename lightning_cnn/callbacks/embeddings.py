"""TensorBoard's projector: the penultimate-layer features of a fixed set of validation images, at the end of fit.

Each point carries its image (the sprite) and its class name (the metadata), so the projector
shows how the classes separate in the features the last layer classifies.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from lightning_cnn.callbacks.figures import displayable
from lightning_cnn.callbacks.tensorboard import (
    EvaluationDashboard,
    class_names,
    denormalize,
    images_and_labels,
    tensorboard_logger,
)
from lightning_cnn.runs.tags import EMBEDDING_TAG


class Embeddings(EvaluationDashboard):
    """Logs the features that the network's last layer reads, for the first ``num_images`` validation images.

    The images are the first ones of the first validation (the validation order is fixed); rank zero
    alone keeps and embeds them. Listed before the budget, so its time counts in ``time/insight_seconds``.

    Args:
        num_images: how many validation images the projector shows.
    """

    def __init__(self, num_images: PositiveInt = 256) -> None:
        self.num_images = num_images
        self._images: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._complete = False  # set after the first validation: later ones show the same images

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._images, self._labels, self._complete = [], [], False

    def end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        if split == "val":
            self._complete = self._complete or (not trainer.sanity_checking and bool(self._images))

    def evaluation_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, split: str
    ) -> None:
        if split != "val" or self._complete or trainer.sanity_checking or not trainer.is_global_zero:
            return
        kept = sum(len(images) for images in self._images)
        if kept >= self.num_images:
            return
        pair = images_and_labels(batch)
        if pair is not None:
            self._images.append(pair[0][: self.num_images - kept].detach().clone())
            self._labels.append(pair[1][: self.num_images - kept].detach().clone())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero or not self._images:
            return
        with self.timed():
            images, labels = torch.cat(self._images), torch.cat(self._labels)
            layer_name, features = penultimate_features(pl_module, images)
            names = class_names(trainer)
            metadata = [names[label] if names else str(label) for label in labels.tolist()]
            logger.experiment.add_embedding(
                features.flatten(1).cpu(),
                metadata=metadata,
                label_img=displayable(denormalize(trainer, images)).cpu(),
                global_step=trainer.global_step,
                tag=f"{EMBEDDING_TAG}_{layer_name}",  # a folder name: no slash
            )


def penultimate_features(module: nn.Module, images: Tensor) -> tuple[str, Tensor]:
    """The name of the last layer with weights that the forward pass runs, and its input: the features it classifies.

    A network whose last such layer sees the logits' input directly (``fc``) gives the flattened
    features; one without any layer with weights gives its outputs.
    """
    names = {layer: name for name, layer in module.named_modules()}
    seen: list[tuple[str, Tensor]] = []

    def keep_input(layer: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor):
            seen.append((names[layer], args[0].detach()))

    layers = [layer for layer in module.modules() if next(layer.children(), None) is None]
    weighted = [layer for layer in layers if next(layer.parameters(recurse=False), None) is not None]
    handles = [layer.register_forward_pre_hook(keep_input) for layer in weighted]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            outputs = module(images)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return seen[-1] if seen else ("outputs", outputs)
