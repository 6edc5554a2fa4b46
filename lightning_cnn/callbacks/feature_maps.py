"""What the network learned and sees: the first convolution's filters, and every convolution's feature maps.

Tags: ``filters/<first conv>``, ``feature_maps/input`` and ``feature_maps/<conv>``, named as the
module names its layers (``backbone.conv1``), on one fixed validation image.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_cnn.callbacks.figures import displayable, tile_grid
from lightning_cnn.callbacks.tensorboard import EvaluationDashboard, denormalize, images_and_labels, tensorboard_logger


class FeatureMaps(EvaluationDashboard):
    """Logs the first convolution's filters and the feature maps of every convolution at each drawn validation end.

    Args:
        filters: log the first convolution's filters.
        feature_maps: log every convolution's feature maps for the first validation image.
    """

    def __init__(self, filters: bool = True, feature_maps: bool = True) -> None:
        self.filters, self.feature_maps = filters, feature_maps
        self._example: Tensor | None = None  # the fixed image whose feature maps are shown

    def evaluation_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, split: str
    ) -> None:
        pair = images_and_labels(batch) if split == "val" and batch_idx == 0 and self._example is None else None
        if pair is not None and self.feature_maps and not trainer.sanity_checking:
            self._example = pair[0][:1].detach().clone()

    def end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        if split != "val" or trainer.sanity_checking or not trainer.is_global_zero or not self.drawing(trainer):
            return
        convolutions = [(name, m) for name, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)]
        if not convolutions:
            return
        writer, step = tensorboard_logger(trainer).experiment, trainer.global_step
        with self.timed():
            if self.filters:
                name, first = convolutions[0]
                weight = first.weight.detach()
                # One tile per output filter (RGB when it reads three channels, else one tile per input channel).
                kernels = weight if weight.shape[1] == 3 else weight.flatten(0, 1).unsqueeze(1)
                nrow = None if weight.shape[1] in (1, 3) else weight.shape[1]
                writer.add_image(f"filters/{name}", tile_grid(kernels, nrow), step)
            if self.feature_maps and self._example is not None:
                activations = _activations(pl_module, convolutions, self._example)
                writer.add_image(
                    "feature_maps/input", tile_grid(displayable(denormalize(trainer, self._example)), 1), step
                )
                for name, _ in convolutions:
                    if name in activations:
                        maps = activations[name][0].unsqueeze(1)  # one tile per channel
                        writer.add_image(f"feature_maps/{name}", tile_grid(maps), step)


def _activations(
    pl_module: pl.LightningModule, layers: list[tuple[str, nn.Module]], example: Tensor
) -> dict[str, Tensor]:
    """The output of each layer for ``example``, in evaluation mode (dropout would blank out random maps)."""
    activations: dict[str, Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: activations.__setitem__(name, out))
        for name, module in layers
    ]
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            pl_module(example)
    finally:
        pl_module.train(was_training)
        for handle in handles:
            handle.remove()
    return activations
