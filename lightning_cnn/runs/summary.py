"""Runs as typed values read from their records: ``RunSummary``, and every run under a log root.

``report``, ``results`` and ``sweep`` build their tables from these; nothing is rebuilt from
TensorBoard event files or saved configs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lightning_cnn.errors import UserError
from lightning_cnn.runs.record import read_record, record_dirs
from lightning_cnn.runs.tags import CURVE_TAGS

DEFAULT_LOG_ROOT = "lightning_logs"


@dataclass
class RunSummary:
    """What one run recorded. Field names and meanings are stable; ``None`` means the run did not record it.

    Attributes:
        run: the run folder relative to the log root, e.g. ``quickstart/version_0``.
        path: the run folder.
        architecture: class name of the network (``model.backbone``).
        parameters: number of parameters of the module.
        optimizer: optimizer class name.
        learning_rate: the optimizer's configured ``lr``.
        scheduler: LR scheduler class name, or ``None`` without one.
        batch_size: training batch size per device.
        max_epochs: the configured epoch budget.
        augmentation: whether training batches were augmented.
        val_split: the validation images held out of the training set (a count or a fraction; 0: none,
            so the run trained on all of them and was not validated).
        weight_averaging: the averaged weights it validated and saved (``EMA 0.999``), ``None`` without.
        ensemble_members: for an ensemble (``ensemble``), how many runs it averages; ``tta``: whether it
            averaged over shifted images too. ``None`` for a single run.
        hardware: the device(s) it trained on, e.g. ``NVIDIA H100 80GB HBM3`` or ``CPU (2 cores)``.
        best_val_acc: the highest ``val/acc_best`` logged (best validation accuracy, a fraction).
        test_acc: the last ``test/acc`` logged (``test --ckpt_path best|last`` logs into the run).
        epochs: training epochs completed (one ``train/loss`` value per epoch).
        train_seconds: wall seconds of training, summed over the fit sessions (``time/train_seconds``).
        curves: per tag of ``CURVE_TAGS``, the ``(epoch, value)`` pairs logged, epochs counted from 1.
    """

    run: str
    path: Path
    architecture: str | None = None
    parameters: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    scheduler: str | None = None
    batch_size: int | None = None
    max_epochs: int | None = None
    augmentation: bool | None = None
    val_split: float | None = None
    weight_averaging: str | None = None
    ensemble_members: int | None = None
    tta: bool | None = None
    hardware: str | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    epochs: int = 0
    train_seconds: float | None = None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def recipe(self) -> str:
        """The training recipe in words, e.g. ``Adam lr 0.01, OneCycleLR, batch 128, 3 epochs, no augmentation``."""
        return self.describe_recipe()

    def describe_recipe(self, *, epochs: bool = True, name_defaults: bool = True) -> str:
        """The recipe in words; ``epochs=False`` leaves out the epoch budget (for tables with an epochs column),
        ``name_defaults=False`` leaves out what is off (``constant lr``, ``no augmentation``)."""
        parts = []
        if self.ensemble_members is not None:
            parts.append(f"ensemble of {self.ensemble_members} runs" + (" with TTA (shifts)" if self.tta else ""))
        if self.optimizer is not None:
            parts.append(self.optimizer + (f" lr {self.learning_rate:g}" if self.learning_rate is not None else ""))
        if self.scheduler or name_defaults:
            parts.append(self.scheduler or "constant lr")
        if self.batch_size is not None:
            parts.append(f"batch {self.batch_size}")
        if epochs and self.max_epochs is not None and self.max_epochs >= 0:
            parts.append(f"{self.max_epochs} epoch" + ("" if self.max_epochs == 1 else "s"))
        if self.augmentation is not None and (self.augmentation or name_defaults):
            parts.append("augmentation" if self.augmentation else "no augmentation")
        if self.weight_averaging is not None:
            parts.append(self.weight_averaging)
        if self.val_split == 0:
            parts.append("no validation")
        return ", ".join(parts)


def _natural_key(text: str) -> list[int | str]:
    # version_10 sorts after version_9
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _optional(value: object, kind: type) -> int | float | str | bool | None:
    if value is None or (kind is not str and isinstance(value, str)):
        return None
    return kind(value)


def summarize_run(run_dir: Path, log_root: Path) -> RunSummary | None:
    """One run folder's record (``summary.json``) as a ``RunSummary``; None for a folder without one."""
    record = read_record(run_dir)
    if record is None:
        return None
    recipe = record.get("recipe") or {}
    scheduler = recipe.get("scheduler")
    best, test = record.get("best") or {}, record.get("test") or {}
    return RunSummary(
        run=run_dir.relative_to(log_root).as_posix() or ".",
        path=run_dir,
        architecture=_optional(recipe.get("architecture"), str),
        parameters=_optional(recipe.get("parameters"), int),
        optimizer=_optional(recipe.get("optimizer"), str),
        learning_rate=_optional(recipe.get("lr"), float),
        scheduler=None if scheduler in (None, "none") else str(scheduler),
        batch_size=_optional(recipe.get("batch_size"), int),
        max_epochs=_optional(recipe.get("max_epochs"), int),
        augmentation=_optional(recipe.get("augmentation"), bool),
        val_split=_optional(recipe.get("val_split"), float),
        weight_averaging=_optional(recipe.get("weight_averaging"), str),
        ensemble_members=_optional(recipe.get("ensemble_members"), int),
        tta=_optional(recipe.get("tta"), bool),
        hardware=_optional(record.get("hardware") or test.get("hardware"), str),
        best_val_acc=_optional(best.get("val/acc"), float),
        test_acc=_optional(test.get("test/acc"), float),
        epochs=int(record.get("epochs") or 0),
        train_seconds=_optional(record.get("train_seconds"), float),
        curves={
            tag: [(int(epoch), float(value)) for epoch, value in record.get("curves", {}).get(tag, [])]
            for tag in CURVE_TAGS
        },
    )


def collect_runs(log_root: str | Path = DEFAULT_LOG_ROOT) -> list[RunSummary]:
    """Every run under ``log_root`` (each folder holding a run record), in natural name order."""
    log_root = Path(log_root)
    if not log_root.is_dir():
        raise UserError(f"log root {log_root} does not exist; train a run first, or pass --log_root <folder of runs>")
    folders = sorted(record_dirs(log_root), key=lambda folder: _natural_key(folder.relative_to(log_root).as_posix()))
    return [summary for summary in (summarize_run(folder, log_root) for folder in folders) if summary is not None]


def unrecorded_runs(log_root: Path) -> list[Path]:
    """Folders with TensorBoard event files but no run record (logged by an earlier version, or by hand)."""
    recorded = set(record_dirs(log_root))
    folders = {path.parent for path in Path(log_root).rglob("events.out.tfevents.*") if path.is_file()}
    return sorted(folder for folder in folders - recorded)
