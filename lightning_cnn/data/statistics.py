"""Normalization statistics computed from training images, and cached beside the data they came from."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor


def pixel_histogram(pixels: Tensor) -> Tensor:
    """How many pixels of uint8 images ``(N, C, H, W)`` have each of the 256 levels, per channel: ``(C, 256)``."""
    return torch.stack(
        [torch.bincount(pixels[:, channel].reshape(-1).cpu(), minlength=256) for channel in range(pixels.shape[1])]
    )


def pixel_statistics(pixels: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, H, W)``, on the [0, 1] pixel scale.

    Exact, from a histogram of the 256 levels of each channel, so no float copy of the images is made.
    """
    return histogram_statistics(pixel_histogram(pixels))


def histogram_statistics(histogram: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation, on the [0, 1] scale, of a ``(C, 256)`` pixel histogram."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for counts in histogram.double():
        total = counts.sum().clamp_min(1)
        mean = float((counts * levels).sum() / total)
        variance = float((counts * (levels - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(variance, 0.0) ** 0.5 or 1.0)  # a blank channel: nothing to scale
    return means, stds


def cached_statistics(
    cache_file: Path, source: Path, compute: Callable[[], tuple[list[float], list[float]]]
) -> tuple[list[float], list[float]]:
    """The statistics of ``source`` as recorded in ``cache_file``, or ``compute()``-d and recorded there.

    An entry is keyed by the source file's name and holds its size and modification time, so a
    replaced file is measured again. A cache that cannot be written (a read-only data folder) is
    skipped: the statistics are then computed on every run.
    """
    stat = source.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        entries = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        entries = {}
    entry = entries.get(source.name) if isinstance(entries, dict) else None
    if isinstance(entry, dict) and all(entry.get(key) == value for key, value in stamp.items()):
        return list(entry["mean"]), list(entry["std"])
    mean, std = compute()
    entries = entries if isinstance(entries, dict) else {}
    entries[source.name] = {**stamp, "mean": mean, "std": std}
    try:
        # Written whole or not at all: processes of a distributed run may write it at the same time.
        with tempfile.NamedTemporaryFile("w", dir=cache_file.parent, suffix=".tmp", delete=False) as file:
            json.dump(entries, file, indent=1)
    except OSError:
        return mean, std
    try:
        os.replace(file.name, cache_file)
    except OSError:
        Path(file.name).unlink(missing_ok=True)
    return mean, std
