"""Keeps the run's ``summary.json`` (see :mod:`lightning_cnn.runs.record`) current during fit and test."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import measure_flops
from torch import Tensor

from lightning_cnn.callbacks.throughput import TRAIN_RATE_TAGS
from lightning_cnn.data import ImageDataModule
from lightning_cnn.runs.recipe import hardware_name, run_hyperparameters
from lightning_cnn.runs.record import new_record, read_record, write_record
from lightning_cnn.runs.tags import BEST_TAG, FLOPS_TAG, RECORDED_CURVES


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in metrics.items()
        if (isinstance(value, Tensor) and value.numel() == 1) or isinstance(value, (int, float))
    }


def flops_per_image(pl_module: pl.LightningModule) -> dict[str, int] | None:
    """The network's FLOPs for one image, by Lightning's ``measure_flops``: ``forward`` (on the network itself,
    in evaluation mode and without gradients, so nothing of the run changes) and ``train``, a training step's
    forward and backward (on a copy, so no gradient is left on the run's weights; left out for a network
    that cannot be copied)."""
    example = pl_module.example_input_array
    if not isinstance(example, Tensor):
        return None
    network, example = pl_module.backbone, example.to(pl_module.device)
    was_training = network.training
    try:
        network.eval()  # batch norm must not learn from the example, dropout draws no random numbers
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            flops = {"forward": measure_flops(network, lambda: network(example)) // len(example)}
    except Exception:  # noqa: BLE001 (a network the counter cannot follow only leaves the figure out)
        return None
    finally:
        network.train(was_training)
    try:
        # Evaluation mode (dropout draws no random numbers), and the generators forked all the same:
        # a resumed run must draw exactly what the uninterrupted one does.
        copy_ = copy.deepcopy(network).eval()
        with torch.random.fork_rng(devices=[]):
            flops["train"] = measure_flops(copy_, lambda: copy_(example), loss_fn=lambda out: out.sum()) // len(example)
    except Exception:  # noqa: BLE001 (a network holding objects that cannot be copied)
        pass
    return flops


class RunRecorder(Callback):
    """Writes the run record into the logger's run folder (rank zero; nothing without a logger)."""

    def __init__(self) -> None:
        self._record: dict[str, Any] | None = None
        self._train_start: float | None = None

    @staticmethod
    def run_dir(trainer: pl.Trainer) -> Path | None:
        """The logger's run folder (read on rank zero alone: ``trainer.log_dir`` would broadcast)."""
        log_dir = trainer.logger.log_dir if trainer.logger is not None and trainer.is_global_zero else None
        return Path(log_dir) if log_dir else None

    def _load(self, trainer: pl.Trainer) -> dict[str, Any] | None:
        run_dir = self.run_dir(trainer)
        if run_dir is None:
            return None
        if self._record is None:
            self._record = read_record(run_dir) or new_record()
        return self._record

    def _save(self, trainer: pl.Trainer) -> None:
        record, run_dir = self._record, self.run_dir(trainer)
        if record is None or run_dir is None:
            return
        record["checkpoints"] = self._checkpoints(trainer, run_dir, record["checkpoints"])
        write_record(run_dir, record)

    @staticmethod
    def _checkpoints(trainer: pl.Trainer, run_dir: Path, known: dict[str, str | None]) -> dict[str, str | None]:
        def relative(path: str | Path) -> str:
            path = Path(path)
            return path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else str(path)

        best = known.get("best")
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
                best = relative(callback.best_model_path)
                break
        last = run_dir / "checkpoints" / "last.ckpt"
        return {"best": best, "last": relative(last) if last.is_file() else known.get("last")}

    # -- fit -------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start = time.perf_counter()
        record = self._load(trainer)
        if record is None:
            return
        record["recipe"] = run_hyperparameters(trainer, pl_module)
        record["hardware"] = hardware_name(trainer)
        record["flops_per_image"] = flops_per_image(pl_module)
        batch_size = trainer.datamodule.batch_size if isinstance(trainer.datamodule, ImageDataModule) else None
        train_flops = (record["flops_per_image"] or {}).get("train")
        if hasattr(pl_module, "train_flops_per_batch") and batch_size and train_flops:
            pl_module.train_flops_per_batch = train_flops * batch_size  # for Lightning's ThroughputMonitor
        record["status"] = "training"
        # A resumed fit (its loops are restored by now) trains again from its checkpoint's epoch: what
        # was recorded after it is replaced.
        resumed_at = trainer.current_epoch
        record["curves"] = {
            tag: [point for point in points if point[0] <= resumed_at] for tag, points in record["curves"].items()
        }
        record["epochs"] = min(record["epochs"], resumed_at)
        self._save(trainer)

    def _record_epochs(self, trainer: pl.Trainer) -> None:
        """The epoch just trained (and validated), read from the metrics Lightning holds after it."""
        record = self._record
        completed = trainer.current_epoch  # epochs completed so far
        if record is None or completed <= record["epochs"]:
            return
        metrics = _scalars(trainer.callback_metrics)
        for tag in RECORDED_CURVES:
            if tag in metrics:
                record["curves"].setdefault(tag, []).append([completed, metrics[tag]])
        record["epochs"], record["final"] = completed, metrics
        if BEST_TAG in metrics and (record["best"] is None or metrics[BEST_TAG] > record["best"]["val/acc"]):
            record["best"] = {"val/acc": metrics[BEST_TAG], "epoch": completed}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks' epoch-end hooks run before the module logs its training metrics, so the epoch
        # just ended is recorded when the next one starts (and at the end of training).
        if self._record is not None and trainer.current_epoch > self._record["epochs"]:
            self._record_epochs(trainer)
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record_epochs(trainer)
        if self._record is not None and self._train_start is not None:
            self._add_session(time.perf_counter() - self._train_start)
            # The training rate of Lightning's ThroughputMonitor (throughput.monitor), over its last window.
            logged = _scalars(trainer.logged_metrics)
            rate = next((logged[tag] for tag in TRAIN_RATE_TAGS if tag in logged), None)
            self._record["images_per_second"] = rate
            train_flops = (self._record.get("flops_per_image") or {}).get("train")  # per image
            if train_flops is not None and trainer.logger is not None:
                trainer.logger.log_metrics({FLOPS_TAG: train_flops}, step=trainer.global_step)
        self._train_start = None

    def _add_session(self, seconds: float) -> None:
        self._record["fit_sessions"].append(seconds)
        self._record["train_seconds"] = sum(self._record["fit_sessions"])

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._record is not None:
            self._record["status"] = "finished"
            self._save(trainer)

    # -- test ------------------------------------------------------------------------------------
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = self._load(trainer)
        if record is None:
            return
        if not record["recipe"]:  # a checkpoint tested into a folder of its own
            record["recipe"] = run_hyperparameters(trainer, pl_module)
        run_dir = self.run_dir(trainer)
        checkpoint = trainer.ckpt_path
        if checkpoint is not None and Path(checkpoint).is_relative_to(run_dir):
            checkpoint = Path(checkpoint).relative_to(run_dir).as_posix()
        metrics = {
            name: value for name, value in _scalars(trainer.callback_metrics).items() if name.startswith("test/")
        }
        record["test"] = {**metrics, "checkpoint": checkpoint, "hardware": hardware_name(trainer)}
        self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._record is not None and trainer.state.fn == "fit":
            self._record["status"] = "stopped"
            if self._train_start is not None:  # a stopped session trained too: its time counts
                self._add_session(time.perf_counter() - self._train_start)
                self._train_start = None
            self._save(trainer)
