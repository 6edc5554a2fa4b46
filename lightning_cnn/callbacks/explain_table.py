"""``explain.md`` in the run folder: the layer arithmetic of the network, as the ``explain`` command prints it."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lightning_cnn.analysis import UntraceableNetworkError, explain_markdown, trace_network

EXPLAIN_FILENAME = "explain.md"


def run_folder(trainer: pl.Trainer) -> Path | None:
    """The logger's run folder, on rank zero only (``trainer.log_dir`` would broadcast, which others never join)."""
    log_dir = trainer.logger.log_dir if trainer.logger is not None and trainer.is_global_zero else None
    return Path(log_dir) if log_dir else None


class ExplainTable(Callback):
    """Writes the backbone's layer table (sizes, parameters, receptive fields, FLOPs) to ``explain.md`` at fit start."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = run_folder(trainer)
        network = getattr(pl_module, "backbone", pl_module)
        input_shape = getattr(pl_module.hparams, "input_shape", None)
        if folder is None or input_shape is None:
            return
        try:
            table = explain_markdown(trace_network(network, tuple(input_shape)))
        except UntraceableNetworkError as error:  # a network the trace cannot follow must not stop training
            rank_zero_warn(f"insight.explain: {error}; {EXPLAIN_FILENAME} is not written")
            return
        folder.mkdir(parents=True, exist_ok=True)
        (folder / EXPLAIN_FILENAME).write_text(table, encoding="utf-8")
