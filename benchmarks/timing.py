"""Callbacks the throughput benchmark adds to a Lightning run: a step timer and the model options.

They live apart from the benchmark script so that ``python -m lightning_cnn fit`` can load them with
``--trainer.callbacks+=...`` without importing the benchmark itself.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn


def peak_resident_bytes() -> int:
    """This process's peak resident set size since it started (``VmHWM``; ``ru_maxrss`` off Linux).

    ``VmHWM`` is preferred because a child's ``ru_maxrss`` also counts the parent it was forked from.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synchronize(device: torch.device) -> None:
    """Wait for queued accelerator work, so a wall-clock reading covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LinearNet(nn.Sequential):
    """One linear layer over the flattened image: a network whose compute is negligible.

    Trained in place of the two-conv net (``--network linear``), it leaves the per-step cost of
    everything around the network: the loop, data, hooks, metrics and logging of each way.
    """

    def __init__(self, in_features: int = 28 * 28, num_classes: int = 10) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_features, num_classes))


class ThroughputTimer(pl.Callback):
    """Times training steps after a warm-up and the first real validation pass; writes them as JSON.

    The training window runs from the start of batch ``warmup_steps`` to the end of the first
    epoch's last batch, the validation window over the batches of the first validation after the sanity
    check (epoch-end work such as images is outside both), with one device sync at each end and
    none per step. The JSON also holds the wall clock (``time.time()``) at the first training step,
    so a parent process can tell start-up time, and this process's peak resident memory.

    Args:
        output: path of the JSON file to write when training ends.
        warmup_steps: leading training steps left out of the timing (allocator, autotuning, compile).
    """

    def __init__(self, output: str, warmup_steps: int = 10) -> None:
        self.output, self.warmup_steps = Path(output), warmup_steps
        self.first_step_wall: float | None = None
        self.timed_epoch: int | None = None
        self.train_start = self.train_end = self.train_cpu_start = self.train_cpu_end = None
        self.train_samples = 0
        self.val_start = self.val_seconds = None
        self.val_samples = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.first_step_wall is None:
            self.first_step_wall = time.time()
            self.timed_epoch = trainer.current_epoch  # a longer run is timed over its first epoch only
        if batch_idx == self.warmup_steps and trainer.current_epoch == self.timed_epoch:
            synchronize(pl_module.device)
            self.train_start, self.train_cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.current_epoch != self.timed_epoch:
            return
        if batch_idx >= self.warmup_steps:
            self.train_samples += len(batch[1])
        if batch_idx == trainer.num_training_batches - 1:
            synchronize(pl_module.device)
            self.train_end, self.train_cpu_end = time.perf_counter(), time.process_time()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self.val_seconds is None:
            synchronize(pl_module.device)
            self.val_start = time.perf_counter()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.val_start is None or self.val_seconds is not None:
            return
        self.val_samples += len(batch[1])
        if batch_idx == trainer.num_val_batches[dataloader_idx] - 1:
            synchronize(pl_module.device)
            self.val_seconds = time.perf_counter() - self.val_start

    def result(self) -> dict[str, float | None]:
        done = self.train_end is not None
        return {
            "first_step_wall": self.first_step_wall,
            "train_samples": self.train_samples,
            "train_seconds": self.train_end - self.train_start if done else None,
            "train_cpu_seconds": self.train_cpu_end - self.train_cpu_start if done else None,
            "val_samples": self.val_samples,
            "val_seconds": self.val_seconds,
            "peak_rss_bytes": peak_resident_bytes(),
        }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.output.write_text(json.dumps(self.result()))


class ModelOptions(pl.Callback):
    """Puts a LightningModule's network in channels_last layout and/or compiles it, before fit starts.

    Args:
        channels_last: convert the module's weights to ``torch.channels_last``.
        compile: compile the submodule named ``attribute`` in place (``nn.Module.compile``: its
            parameter names, and so the checkpoints, stay those of the eager module).
        compile_mode: ``torch.compile``'s mode: ``default``, ``reduce-overhead`` (CUDA graphs), ``max-autotune``.
        attribute: the submodule that maps images to logits.
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        attribute: str = "backbone",
    ) -> None:
        self.channels_last, self.compile, self.compile_mode = channels_last, compile, compile_mode
        self.attribute = attribute
        self.compiled = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile and not self.compiled:
            getattr(pl_module, self.attribute).compile(mode=self.compile_mode)
            self.compiled = True

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # CUDA graphs (reduce-overhead) reuse their output memory: a new step must be declared as such.
        if self.compile and self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    on_validation_batch_start = on_train_batch_start
