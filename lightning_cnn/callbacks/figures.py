"""Drawing for the dashboards: image grids, the confusion matrix, the misclassified examples (with saliency)
and the per-class accuracy bars."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import interpolate
from torchvision.utils import make_grid

# Small kernels and feature maps are upscaled (nearest) to at least this many pixels a side, to be visible.
MIN_DISPLAY_PIXELS = 48


def upscale(images: Tensor) -> Tensor:
    """Nearest-neighbour upscaling of a ``(N, C, H, W)`` batch so that small maps stay legible."""
    factor = math.ceil(MIN_DISPLAY_PIXELS / min(images.shape[-2:]))
    return interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def displayable(images: Tensor) -> Tensor:
    """A ``(N, C, H, W)`` batch with one or three channels, as images can be shown (others are averaged to gray)."""
    return images if images.shape[1] in (1, 3) else images.mean(dim=1, keepdim=True)


def tile_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """A grid of single images, each stretched to its own [0, 1] range (filters and feature maps)."""
    images = upscale(images.detach().float().cpu())
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


def wrong_indices(labels: Tensor, predictions: Tensor, limit: int) -> Tensor:
    """The first ``limit`` misclassified positions of a batch, the ones :func:`misclassified_figure` shows."""
    return (predictions != labels).nonzero().flatten()[:limit].cpu()


def saliency_overlay(images: Tensor, saliency: Tensor) -> Tensor:
    """Gray images with ``saliency`` (``(N, H, W)``, any scale) laid over them in red, each map stretched to [0, 1]."""
    peak = saliency.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    strength = (saliency.unsqueeze(1) / peak).clamp(0, 1) * 0.8
    gray = images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    red = torch.tensor([1.0, 0.1, 0.0]).view(1, 3, 1, 1)
    return gray * (1 - strength) + red * strength


def misclassified_figure(  # noqa: ANN201
    images: Tensor,
    labels: Tensor,
    predictions: Tensor,
    limit: int,
    class_names: list[str] | None = None,
    saliency: Tensor | None = None,
):
    """Up to ``limit`` misclassified images (on the [0, 1] scale), each marked ``predicted/true``.

    ``saliency``, one ``(H, W)`` map per shown image (see :func:`wrong_indices`), is laid over the
    images in red: the pixels that made the network predict what it did.
    """
    from matplotlib.figure import Figure

    wrong = wrong_indices(labels, predictions, limit)
    images, labels, predictions = displayable(images[wrong].cpu()), labels[wrong].cpu(), predictions[wrong].cpu()
    if saliency is not None and len(wrong):
        images = saliency_overlay(images, saliency.cpu())
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
        color = "deepskyblue" if saliency is not None else "red"  # readable beside the red saliency
        axes.text(x, y, f"{predicted}/{true}", color=color, fontsize=8, va="top", fontweight="bold")
    title = "predicted/true" if len(wrong) else "no misclassified examples in the first batch"
    if saliency is not None and len(wrong):
        title += "; red: the pixels behind the prediction (integrated gradients)"
    figure.suptitle(title, fontsize=9, y=0.995, va="top")
    return figure


def accuracy_bar_figure(accuracy: Tensor, class_names: list[str]):  # noqa: ANN201
    """One bar per class, its accuracy on a 0-1 axis zoomed to where the bars differ, the lowest in red."""
    from matplotlib.figure import Figure

    values = accuracy.float().tolist()
    figure = Figure(figsize=(max(4.5, 0.3 * len(values) + 1.5), 3.0), dpi=100)
    axes = figure.add_axes((0.12, 0.2, 0.85, 0.7))
    lowest = min(range(len(values)), key=values.__getitem__)
    colors = ["tab:red" if index == lowest else "tab:blue" for index in range(len(values))]
    axes.bar(range(len(values)), values, color=colors)
    # Accuracies near 1 would all look the same on a full 0-1 axis.
    axes.set_ylim(max(0.0, min(values) - 0.05), 1.0)
    axes.set_xticks(
        range(len(values)), class_names[: len(values)], rotation=90 if max(map(len, class_names)) > 2 else 0
    )
    axes.set_ylabel("accuracy")
    axes.set_title(f"accuracy by class (lowest: {class_names[lowest]}, {values[lowest]:.2%})", fontsize=9)
    return figure


def reliability_figure(counts: Tensor, confidence_sums: Tensor, correct_sums: Tensor):  # noqa: ANN201
    """The reliability diagram: per confidence bin, the accuracy (bars) against the mean confidence (the
    diagonal is a perfectly calibrated network), with the expected calibration error in the title."""
    from matplotlib.figure import Figure

    bins = len(counts)
    filled = counts > 0
    accuracy = torch.where(filled, correct_sums / counts.clamp_min(1), torch.zeros_like(correct_sums))
    confidence = torch.where(filled, confidence_sums / counts.clamp_min(1), torch.zeros_like(confidence_sums))
    error = float(((counts / counts.sum()) * (accuracy - confidence).abs()).sum())
    edges = torch.linspace(0, 1, bins + 1)
    figure = Figure(figsize=(4.5, 4.0), dpi=100)
    axes = figure.add_axes((0.14, 0.12, 0.8, 0.78))
    axes.bar(edges[:-1].tolist(), accuracy.tolist(), width=1 / bins, align="edge", edgecolor="black", label="accuracy")
    axes.bar(
        edges[:-1].tolist(),
        (confidence - accuracy).tolist(),
        bottom=accuracy.tolist(),
        width=1 / bins,
        align="edge",
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    axes.plot([0, 1], [0, 1], "k--", linewidth=1)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence of the predicted class")
    axes.set_ylabel("accuracy")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(f"reliability (ECE {error:.2%}, {int(counts.sum())} images)", fontsize=9)
    return figure
