"""A run's recipe as flat values (architecture, optimizer, schedule, data, hardware), for the hparams tab."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch

from lightning_cnn.callbacks.weight_averaging import averaging_name
from lightning_cnn.data import ImageDataModule


def hardware_name(trainer: pl.Trainer) -> str:
    """What the run trained on, e.g. ``NVIDIA H100 80GB HBM3`` or ``CPU (2 cores)``, with the device count."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{device.type.upper()} ({os.cpu_count()} cores)"
    return name if trainer.world_size == 1 else f"{trainer.world_size} x {name}"


def run_hyperparameters(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, bool | int | float | str]:
    """The run's recipe as flat values: architecture, parameter count, optimizer, schedule, batch, epochs."""
    backbone = getattr(pl_module, "backbone", pl_module)
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
    datamodule = trainer.datamodule
    hparams: dict[str, bool | int | float | str] = {
        "architecture": type(backbone).__name__,
        "parameters": sum(p.numel() for p in pl_module.parameters()),
        "optimizer": type(optimizer).__name__ if optimizer is not None else "none",
        "scheduler": type(scheduler).__name__ if scheduler is not None else "none",
        "max_epochs": trainer.max_epochs if trainer.max_epochs is not None else -1,
        "devices": trainer.world_size,
        "precision": str(trainer.precision),
        "seed": os.environ.get("PL_GLOBAL_SEED", "none"),
        "hardware": hardware_name(trainer),
    }
    if optimizer is not None:
        # ``defaults`` holds the configured values; param_groups may already be rewritten by a scheduler.
        for key in ("lr", "weight_decay", "momentum"):
            if isinstance(optimizer.defaults.get(key), (int, float)):
                hparams[key] = float(optimizer.defaults[key])
    if isinstance(datamodule, ImageDataModule):
        hparams.update(datamodule.recipe())
    averaging = averaging_name(trainer.callbacks)
    if averaging is not None:
        hparams["weight_averaging"] = averaging
    label_smoothing = pl_module.hparams.get("label_smoothing")
    if isinstance(label_smoothing, (int, float)):
        hparams["label_smoothing"] = float(label_smoothing)
    return hparams
