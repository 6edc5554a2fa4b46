"""``python -m lightning_cnn ensemble --config X --checkpoints a.ckpt b.ckpt ...``: several checkpoints as one model.

Each member is a checkpoint of the config's network (a ``.ckpt`` file, or a run folder: its best
checkpoint, else its last); ``--runs <experiment folder>`` adds every run of an experiment (its
seeds). The members' softmax outputs are averaged on the test set; each member's accuracy and the
ensemble's are printed, logged to TensorBoard and kept in a run record (run
``<experiment>/ensemble/version_<n>``, read by ``results``) when the config logs there.

``--tta`` adds test-time augmentation: each member's softmax is also averaged over the image and its
four one-pixel shifts (edges repeated), and the accuracies with it are printed beside those without
(run ``<experiment>/ensemble_tta``). ``--predict`` writes the ensemble's predictions as ``predict``
does: for ``data.predict_path`` (image files) or the test set, to ``predictions.output`` or
``predictions.csv`` in the ensemble's run folder.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_cnn.checkpoints import validate_checkpoint
from lightning_cnn.cli import CNNLightningCLI, config_tool
from lightning_cnn.errors import UserError
from lightning_cnn.module import ImageClassifier
from lightning_cnn.runs.folders import claim_run_folder, run_versions
from lightning_cnn.runs.recipe import hardware_name
from lightning_cnn.runs.record import new_record, read_record, write_record

SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (rows, columns): the image and its one-pixel shifts


class EnsembleCLI(CNNLightningCLI):
    """The experiment's config (model, data) and the members."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--checkpoints", type=list[str], default=[], help="checkpoint files or run folders")
        parser.add_argument("--runs", type=str | None, default=None, help="an experiment folder: all its runs")
        parser.add_argument("--tta", type=bool, default=False, help="also average over one-pixel shifts")
        parser.add_argument("--predict", type=bool, default=False, help="write the ensemble's predictions CSV")

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        # The trainer's device and precision settings, on one device; no logger, checkpoints or dashboards.
        settings = {
            key: value for key, value in self.config_init["trainer"].items() if key not in ("callbacks", "logger")
        }
        settings |= {"devices": 1, "num_nodes": 1, "strategy": "auto", "max_epochs": 1}
        settings |= {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}
        return Trainer(**(settings | kwargs))


def shifted(images: Tensor, rows: int, columns: int) -> Tensor:
    """The images moved by whole pixels, the uncovered edge filled by repeating the nearest pixels."""
    if rows == columns == 0:
        return images
    pad = max(abs(rows), abs(columns))
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    top, left = pad - rows, pad - columns
    return padded[..., top : top + height, left : left + width]


class Ensemble(pl.LightningModule):
    """The members as one model: ``forward`` gives the softmax outputs per member and view ``[M, V, B, K]``."""

    def __init__(self, members: list[ImageClassifier], tta: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.shifts = SHIFTS if tta else SHIFTS[:1]
        self.counts: Tensor | None = None  # correct predictions: [member or ensemble, plain or tta]
        self.total = 0

    def forward(self, images: Tensor) -> Tensor:
        views = [shifted(images, rows, columns) for rows, columns in self.shifts]
        return torch.stack([torch.stack([member(view).softmax(dim=1) for view in views]) for member in self.members])

    def on_test_epoch_start(self) -> None:
        self.counts, self.total = torch.zeros(len(self.members) + 1, 2, device=self.device), 0

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        probabilities = self(images)  # [M, V, B, K]
        plain = torch.cat([probabilities[:, 0], probabilities[:, 0].mean(dim=0, keepdim=True)])
        augmented = probabilities.mean(dim=1)
        augmented = torch.cat([augmented, augmented.mean(dim=0, keepdim=True)])
        for column, averaged in enumerate((plain, augmented)):
            self.counts[:, column] += (averaged.argmax(dim=2) == labels).sum(dim=1)
        self.total += labels.numel()

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        probabilities = self(images).mean(dim=(0, 1))
        return {"prediction": probabilities.argmax(dim=1), "probabilities": probabilities}

    def accuracies(self) -> tuple[list[float], list[float]]:
        """Per member and, last, the ensemble: the test accuracy without TTA, and with it."""
        assert self.counts is not None and self.total
        accuracy = (self.counts / self.total).cpu()
        return accuracy[:, 0].tolist(), accuracy[:, 1].tolist()


def run_checkpoint(run_dir: Path) -> Path:
    """A run folder's best checkpoint (its last when it kept no best)."""
    checkpoints = (read_record(run_dir) or {}).get("checkpoints") or {}
    name = checkpoints.get("best") or checkpoints.get("last")
    if name is None or not (run_dir / name).is_file():
        raise UserError(f"{run_dir} has no checkpoint in its run record (summary.json); pass a .ckpt file instead")
    return run_dir / name


def member_paths(checkpoints: list[str], runs: str | None) -> list[Path]:
    paths = [Path(item) for item in checkpoints]
    if runs is not None:
        folder = Path(runs)
        if not folder.is_dir():
            raise UserError(f"--runs {runs} is not a folder; pass an experiment folder such as lightning_logs/<name>")
        paths += [run for run in reversed(run_versions(folder)) if read_record(run) is not None]
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist; pass checkpoint files or run folders that exist")
    members = [run_checkpoint(path) if path.is_dir() else path for path in paths]
    if len(members) < 2:
        raise UserError(f"an ensemble needs at least 2 members, got {len(members)}; pass --checkpoints a b or --runs")
    return members


def member_record(checkpoint: Path) -> dict[str, Any]:
    """The run record of the run a checkpoint belongs to (``<run>/checkpoints/x.ckpt``); empty without one."""
    return read_record(checkpoint.resolve().parent.parent) or {}


def ensemble_record(paths: list[Path], accuracies: list[float], tta: bool, hardware: str) -> dict[str, Any]:
    """The run record of an ensemble: the first member's recipe, the members' training, the test result."""
    records = [member_record(path) for path in paths]
    seconds = [record.get("train_seconds") for record in records]
    record = new_record()
    record.update(
        status="finished",
        recipe={**(records[0].get("recipe") or {}), "ensemble_members": len(paths), "tta": tta},
        hardware=records[0].get("hardware"),
        epochs=max(int(record.get("epochs") or 0) for record in records),
        train_seconds=sum(seconds) if None not in seconds else None,
    )
    members = [
        {"checkpoint": str(path), "test/acc": accuracy} for path, accuracy in zip(paths, accuracies, strict=False)
    ]
    record["test"] = {"test/acc": accuracies[-1], "checkpoint": None, "hardware": hardware, "members": members}
    return record


def load_members(cli: EnsembleCLI, paths: list[Path]) -> list[ImageClassifier]:
    members = []
    for path in paths:
        checkpoint = validate_checkpoint(path, cli.model)  # one clear line for a file of another network
        member = copy.deepcopy(cli.model)
        member.load_state_dict(checkpoint["state_dict"])
        members.append(member.eval())
    return members


def main(args: list[str]) -> None:
    warnings.filterwarnings("ignore", "LightningCLI's args parameter", UserWarning)
    cli = config_tool(
        EnsembleCLI,
        "python -m lightning_cnn ensemble",
        "Average the softmax outputs of several checkpoints of a config's network on the test set, and report each "
        "member's accuracy and the ensemble's (--tta: also over one-pixel shifts; --predict: write predictions).",
        args,
    )
    paths = member_paths(cli.config.checkpoints, cli.config.runs)
    writer = cli.config_init["predictions"] if cli.config.predict else None
    if writer is not None:
        writer.check_output()
    ensemble = Ensemble(load_members(cli, paths), tta=cli.config.tta)
    cli.datamodule.check_inputs("test")
    cli.trainer.test(ensemble, datamodule=cli.datamodule, verbose=False)
    plain, augmented = ensemble.accuracies()
    width = max(len(str(path)) for path in paths)
    names = [*map(str, paths), f"ensemble of {len(paths)}"]
    for name, accuracy, with_tta in zip(names, plain, augmented, strict=True):
        print(
            f"{name:<{width}}  test acc {100 * accuracy:.2f}%"
            + (f"  (tta {100 * with_tta:.2f}%)" if cli.config.tta else "")
        )

    logger = cli.config_init["trainer"].get("logger")
    run_dir = None
    if isinstance(logger, TensorBoardLogger):
        hardware = hardware_name(cli.trainer)
        for suffix, accuracies in (("ensemble", plain), ("ensemble_tta", augmented))[: 1 + cli.config.tta]:
            experiment = Path(logger.save_dir) / (logger.name or "") / suffix
            board = TensorBoardLogger(experiment.parent, name=suffix, version=claim_run_folder(experiment))
            metrics = {f"ensemble/member_{index}_acc": value for index, value in enumerate(accuracies[:-1])}
            board.log_metrics({**metrics, "ensemble/acc": accuracies[-1]}, step=0)
            board.finalize("success")
            write_record(Path(board.log_dir), ensemble_record(paths, accuracies, suffix.endswith("tta"), hardware))
            print(f"logged to {board.log_dir}")
            run_dir = run_dir or Path(board.log_dir)
    if writer is not None:
        if writer.output is None and run_dir is not None:
            writer.output = run_dir / "predictions.csv"
        cli.datamodule.check_inputs("predict")
        cli.instantiate_trainer(callbacks=[writer]).predict(
            ensemble, datamodule=cli.datamodule, return_predictions=False
        )
        failures = cli.datamodule.predict_failures
        if failures:
            print(f"error: {len(failures)} files could not be read and were skipped (listed above)", file=sys.stderr)
            sys.exit(1)
