"""Samples and FLOPs per second: Lightning's ``ThroughputMonitor``, configured under ``throughput.*``.

It logs ``train/device/samples_per_sec`` (and ``train/samples_per_sec`` on several devices),
``train/device/flops_per_sec`` (the training step's forward and backward FLOPs, measured by
``measure_flops`` at the start of fit) and, where Lightning knows the device's peak, ``train/device/mfu``;
the same rates for validation and test (images only), averaged over the last ``window_size`` batches
and logged every ``trainer.log_every_n_steps``. The run record keeps the last training rate.
"""

from __future__ import annotations

from jsonargparse.typing import restricted_number_type
from lightning.pytorch.callbacks import ThroughputMonitor
from torch import Tensor

WindowSize = restricted_number_type("WindowSize", int, (">=", 2))
TRAIN_RATE_TAGS = ("train/samples_per_sec", "train/device/samples_per_sec")  # all devices first, then one


def batch_images(batch: Tensor | tuple | list) -> int:
    """The number of images in a batch: ``(images, labels)``, ``(images, indices)`` or the images alone."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(images.shape[0])


class Throughput:
    """The ``throughput.*`` settings.

    Args:
        monitor: log samples (and FLOPs) per second with Lightning's ThroughputMonitor. On a GPU it waits
            for the device after every batch to time it; turn it off for the last percent of speed.
        window_size: the batches each rate is averaged over.
    """

    def __init__(self, monitor: bool = True, window_size: WindowSize = 50) -> None:
        self.monitor, self.window_size = monitor, int(window_size)

    def callback(self) -> ThroughputMonitor | None:
        return ThroughputMonitor(batch_size_fn=batch_images, window_size=self.window_size) if self.monitor else None
