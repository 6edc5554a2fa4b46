"""Writes ``predict`` results to a CSV file: one row per image with its path, predicted class and probabilities."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor

from lightning_cnn.data import ImageDataModule
from lightning_cnn.errors import UserError

DEFAULT_FILENAME = "predictions.csv"


class PredictionWriter(BasePredictionWriter):
    """Collects each predict batch's probabilities and writes them as one CSV file when prediction ends.

    Columns: ``path`` (the image file, or ``<test file>[i]`` for the MNIST test set), ``prediction``
    and ``probability_<k>`` for every class. The file is written to a temporary name and renamed,
    so a run that fails part-way leaves no half-written CSV. Under distributed prediction each
    process writes the rows it predicted to ``<name>.rank<r>.csv``.

    Args:
        output: the CSV file to write; by default ``predictions.csv`` in the run's log folder.
    """

    def __init__(self, output: str | Path | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = None if output is None else Path(output)
        self._indices: list[Tensor] = []
        self._probabilities: list[Tensor] = []
        self.written: Path | None = None

    def check_output(self) -> None:
        """Raise a UserError, before anything is predicted, when ``output`` is a folder or cannot be written."""
        if self.output is None:
            return  # the run folder, which the CLI has just created
        if self.output.is_dir():
            raise UserError(
                f"--predictions.output {self.output} is a folder; give a file name, such as "
                f"{self.output / DEFAULT_FILENAME}"
            )
        existing = next(parent for parent in (self.output, *self.output.parents) if parent.exists())
        writable = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        if existing == self.output:
            writable = os.access(self.output, os.W_OK) and os.access(self.output.parent, os.W_OK | os.X_OK)
        if not writable:
            raise UserError(
                f"--predictions.output {self.output} cannot be written ({existing} is not a writable folder); "
                "choose a file in a folder you can write"
            )

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._indices, self._probabilities, self.written = [], [], None

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: dict[str, Tensor],
        batch_indices: Any,
        batch: tuple[Tensor, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Kept on the device until the end; one transfer then, not one per batch.
        self._indices.append(batch[1])
        self._probabilities.append(prediction["probabilities"].float())

    def output_path(self, trainer: pl.Trainer) -> Path:
        path = self.output if self.output is not None else Path(trainer.log_dir or ".") / DEFAULT_FILENAME
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._indices:
            return
        indices = torch.cat(self._indices).cpu()
        probabilities = torch.cat(self._probabilities).cpu()
        order = indices.argsort()
        indices, probabilities = indices[order].tolist(), probabilities[order]
        predictions = probabilities.argmax(dim=1).tolist()
        datamodule = trainer.datamodule if isinstance(trainer.datamodule, ImageDataModule) else None
        names = (datamodule.predict_names if datamodule else None) or [str(i) for i in range(max(indices) + 1)]
        num_classes = probabilities.shape[1]
        class_names = datamodule.class_names if datamodule else [str(k) for k in range(num_classes)]

        path = self.output_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", newline="", dir=path.parent, suffix=".tmp", delete=False) as file:
            try:
                writer = csv.writer(file)
                writer.writerow(["path", "prediction", *(f"probability_{name}" for name in class_names)])
                for index, predicted, row in zip(indices, predictions, probabilities.tolist(), strict=True):
                    writer.writerow([names[index], class_names[predicted], *(f"{p:.6f}" for p in row)])
            except BaseException:
                file.close()
                os.unlink(file.name)
                raise
        os.replace(file.name, path)
        self.written = path
        rank_zero_info(f"Wrote {len(indices)} predictions to {path}")
