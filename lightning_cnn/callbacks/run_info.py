"""What a run is, in TensorBoard: the hparams tab (the recipe beside its final metrics) and the model graph."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_cnn.callbacks.tensorboard import tensorboard_logger
from lightning_cnn.runs.recipe import run_hyperparameters
from lightning_cnn.runs.tags import HPARAM_METRICS


class RunInfo(Callback):
    """At the start of fit: the run's recipe in the hparams tab (with the metrics of ``HPARAM_METRICS``) and its graph.

    Args:
        hparams: fill the hparams tab with the run's recipe and its final metrics.
        graph: log the model graph (traced on the module's ``example_input_array``).
    """

    def __init__(self, hparams: bool = True, graph: bool = True) -> None:
        self.hparams, self.graph = hparams, graph

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        if self.hparams:
            log_hparams(logger, run_hyperparameters(trainer, pl_module))
        if self.graph:
            log_graph(logger, pl_module)


def log_hparams(logger: TensorBoardLogger, hparams: dict[str, bool | int | float | str]) -> None:
    """The hparams plugin's session: these values, and the last value of each metric tag, per run."""
    from tensorboard.plugins.hparams import summary_v2 as hparams_api  # protobuf and absl: not needed by --help

    experiment = hparams_api.hparams_config_pb(
        hparams=[hparams_api.HParam(name) for name in hparams],
        metrics=[hparams_api.Metric(tag) for tag in HPARAM_METRICS],
    )
    session = hparams_api.hparams_pb(hparams, trial_id=logger.log_dir)
    # The writer of the run's own folder (as TensorBoardLogger.log_hyperparams does), so the session
    # and its scalars form one run.
    writer = logger.experiment.file_writer
    writer.add_summary(experiment)
    writer.add_summary(session)
    logger.experiment.flush()


def log_graph(logger: TensorBoardLogger, pl_module: pl.LightningModule) -> None:
    """The module's graph, traced on its example input in evaluation mode; a warning when it cannot be traced."""
    example = pl_module.example_input_array
    if not isinstance(example, Tensor):
        rank_zero_warn("insight.graph: the module has no example_input_array tensor; the graph is not logged")
        return
    was_training = pl_module.training
    pl_module.eval()  # tracing in train mode would update batch-norm statistics with the example
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # add_graph traces with torch.jit, now deprecated
            logger.experiment.add_graph(pl_module, example.to(pl_module.device))
    except Exception as error:  # noqa: BLE001 (an untraceable custom architecture must not stop training)
        rank_zero_warn(f"insight.graph: could not trace the model ({error}); the graph is not logged")
    finally:
        pl_module.train(was_training)
