"""Drawing for the dashboards: image grids, the confusion matrix and the misclassified examples."""

from __future__ import annotations

import math

from torch import Tensor
from torch.nn.functional import interpolate
from torchvision.utils import make_grid

# Small kernels and feature maps are upscaled (nearest) to at least this many pixels a side, to be visible.
MIN_DISPLAY_PIXELS = 48


def _upscale(images: Tensor) -> Tensor:
    """Nearest-neighbour upscaling of a ``(N, C, H, W)`` batch so that small maps stay legible."""
    factor = math.ceil(MIN_DISPLAY_PIXELS / min(images.shape[-2:]))
    return interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def displayable(images: Tensor) -> Tensor:
    """A ``(N, C, H, W)`` batch with one or three channels, as images can be shown (others are averaged to gray)."""
    return images if images.shape[1] in (1, 3) else images.mean(dim=1, keepdim=True)


def tile_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """A grid of single images, each stretched to its own [0, 1] range (filters and feature maps)."""
    images = _upscale(images.detach().float().cpu())
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return make_grid(images, nrow=nrow, normalize=True, scale_each=True, padding=2, pad_value=1.0)


def confusion_matrix_figure(confusion: Tensor, class_names: list[str] | None = None):  # noqa: ANN201 (a matplotlib Figure)
    """Counts of (true, predicted) class pairs as a heat map; empty cells stay blank."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no display backend

    num_classes = confusion.shape[0]
    figure = Figure(figsize=(4.5, 4.5), dpi=100)
    axes = figure.add_axes((0.13, 0.11, 0.84, 0.84))  # fixed layout: tight_layout costs more than the drawing
    # A compressed colour scale, so that a handful of errors shows beside a diagonal of thousands.
    axes.imshow(confusion.numpy(), cmap="Blues", norm=PowerNorm(gamma=0.3, vmin=0))
    high = int(confusion.max())
    # Text is what costs time to draw: label the non-zero cells only (mostly the diagonal).
    for true, predicted in confusion.nonzero().tolist():
        count = int(confusion[true, predicted])
        color = "white" if count > high / 2 else "black"
        axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color=color)
    labels = class_names if class_names is not None else [str(k) for k in range(num_classes)]
    axes.set_xticks(range(num_classes), labels, rotation=90 if max(map(len, labels)) > 2 else 0)
    axes.set_yticks(range(num_classes), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    return figure


def misclassified_figure(  # noqa: ANN201
    images: Tensor, labels: Tensor, predictions: Tensor, limit: int, class_names: list[str] | None = None
):
    """Up to ``limit`` misclassified images (on the [0, 1] scale), each marked ``predicted/true``."""
    from matplotlib.figure import Figure

    wrong = (predictions != labels).nonzero().flatten()[:limit].cpu()
    images, labels, predictions = displayable(images[wrong].cpu()), labels[wrong].cpu(), predictions[wrong].cpu()
    columns, padding = 8, 2
    rows = max(1, math.ceil(len(wrong) / columns))
    figure = Figure(figsize=(columns * 0.9, rows * 0.9 + 0.3), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0 - 0.3 / (rows * 0.9 + 0.3)))
    axes.axis("off")
    height, width = images.shape[-2:] if len(wrong) else (28, 28)
    if len(wrong):
        # One image of all tiles, then one label per tile: far cheaper than a subplot per example.
        grid = make_grid(images, nrow=columns, padding=padding, pad_value=1.0)
        axes.imshow(grid.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
        axes.set_xlim(-0.5, columns * (width + padding) + padding - 0.5)
    for index, (predicted, true) in enumerate(zip(predictions.tolist(), labels.tolist(), strict=True)):
        row, column = divmod(index, columns)
        x, y = column * (width + padding) + padding + 1, row * (height + padding) + padding + 1
        if class_names is not None:
            predicted, true = class_names[predicted], class_names[true]
        axes.text(x, y, f"{predicted}/{true}", color="red", fontsize=8, va="top", fontweight="bold")
    title = "predicted/true" if len(wrong) else "no misclassified examples in the first batch"
    figure.suptitle(title, fontsize=9, y=0.995, va="top")
    return figure
