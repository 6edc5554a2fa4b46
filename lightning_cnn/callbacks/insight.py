"""What a run shows in TensorBoard beyond its loss and accuracy curves.

``TensorBoardInsight`` logs the hyperparameters with the final metrics (the hparams tab), the model
graph, the training time, and at epoch ends images of what the network sees, learned and gets wrong.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tensorboard.plugins.hparams import summary_v2 as hparams_api
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from lightning_cnn.callbacks.figures import confusion_matrix_figure, displayable, misclassified_figure, tile_grid
from lightning_cnn.data import ImageDataModule
from lightning_cnn.runs.recipe import run_hyperparameters
from lightning_cnn.runs.tags import HPARAM_METRICS, INSIGHT_SECONDS_TAG, INSIGHT_SKIPPED_TAG, TRAIN_SECONDS_TAG


def _tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def _class_names(trainer: pl.Trainer) -> list[str] | None:
    return trainer.datamodule.class_names if isinstance(trainer.datamodule, ImageDataModule) else None


class TensorBoardInsight(Callback):
    """Logs hyperparameters, graph, training time and epoch-end images of a run to TensorBoard.

    Images, each one tag per kind and one image per logged epoch:
    ``train/inputs`` (training batch as the network sees it, de-normalized), ``val/misclassified``
    (with predicted and true labels, from the first validation batch), ``val/confusion_matrix``,
    ``filters/<first conv>``, ``feature_maps/input`` and ``feature_maps/<conv>`` for every
    convolution, on the first validation image. ``test`` logs ``test/misclassified`` and
    ``test/confusion_matrix`` once. Scalars: ``time/train_seconds`` (wall time from the start of
    training to its end), ``time/insight_seconds`` (of it, the time spent making these images) and
    ``time/insight_skipped_epochs`` (epochs left without images by ``time_budget``).

    Args:
        input_grid: log a grid of training inputs.
        misclassified: log misclassified validation/test examples.
        confusion_matrix: log the validation/test confusion matrix.
        filters: log the first convolution's filters.
        feature_maps: log every convolution's feature maps for one fixed validation image.
        graph: log the model graph (traced on the module's ``example_input_array``).
        hparams: fill the hparams tab with the run's recipe and its final metrics.
        every_n_epochs: log images at the end of every n-th epoch.
        time_budget: most fraction of the training time the images may take; an epoch whose turn
            comes while they have cost more so far is skipped (the first is always drawn, so 0
            draws only the first). 1 turns the limit off.
        num_inputs: how many training inputs the grid shows.
        num_misclassified: at most this many misclassified examples per figure.
    """

    def __init__(
        self,
        input_grid: bool = True,
        misclassified: bool = True,
        confusion_matrix: bool = True,
        filters: bool = True,
        feature_maps: bool = True,
        graph: bool = True,
        hparams: bool = True,
        every_n_epochs: PositiveInt = 1,
        time_budget: ClosedUnitInterval = 0.03,
        num_inputs: PositiveInt = 32,
        num_misclassified: PositiveInt = 16,
    ) -> None:
        self.input_grid, self.misclassified, self.confusion_matrix = input_grid, misclassified, confusion_matrix
        self.filters, self.feature_maps, self.graph, self.hparams = filters, feature_maps, graph, hparams
        self.every_n_epochs, self.num_inputs, self.num_misclassified = every_n_epochs, num_inputs, num_misclassified
        self.time_budget = time_budget
        self._train_start: float | None = None
        self._insight_seconds = 0.0
        self._draw_this_epoch = True
        self._skipped_epochs = 0
        self._inputs: Tensor | None = None
        self._first_batch: tuple[Tensor, Tensor, Tensor] | None = None  # images, labels, predictions
        self._example: Tensor | None = None  # the fixed image whose feature maps are shown
        self._confusion: MulticlassConfusionMatrix | None = None
        self._logits: Tensor | None = None
        self._hook: RemovableHandle | None = None

    # -- helpers ---------------------------------------------------------------------------------
    def _logging_epoch(self, trainer: pl.Trainer) -> bool:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return False
        within_budget = True
        if self._train_start is not None and self.time_budget < 1:
            elapsed = time.perf_counter() - self._train_start
            within_budget = self._insight_seconds <= self.time_budget * elapsed
        # Rank zero alone draws and times; every rank must agree, as the confusion matrix is reduced across them.
        within_budget = bool(trainer.strategy.broadcast(within_budget, src=0))
        if not within_budget:
            self._skipped_epochs += 1
            if self._skipped_epochs == 1:
                rank_zero_info(
                    f"insight: images skipped at epoch {trainer.current_epoch} to keep them under "
                    f"{self.time_budget:.0%} of the training time (insight.time_budget)"
                )
        return within_budget

    def _collects_evaluation(self) -> bool:
        return self.misclassified or self.confusion_matrix or self.feature_maps

    def _capture_logits(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            self._logits = output

    def _start_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_batch, self._logits = None, None
        if self._confusion is not None:
            self._confusion.reset()
        if _tensorboard_logger(trainer) is not None and self._collects_evaluation():
            # The module's own forward yields the logits, so no batch is run twice.
            self._hook = pl_module.register_forward_hook(self._capture_logits)

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _evaluation_batch(self, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._hook is None or not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            return
        images, labels = batch
        logits, self._logits = self._logits, None
        if logits is None or logits.shape[0] != labels.shape[0]:
            logits = pl_module(images)
        predictions = logits.argmax(dim=1)
        if self.confusion_matrix:
            if self._confusion is None:
                # validate_args=False: argument checks would sync with the host on every batch.
                self._confusion = MulticlassConfusionMatrix(logits.shape[1], validate_args=False)
            if self._confusion.device != predictions.device:
                self._confusion = self._confusion.to(predictions.device)
            self._confusion.update(predictions, labels)
        if batch_idx == 0:
            self._first_batch = (images, labels, predictions)
            if self._example is None:
                self._example = images[:1].detach().clone()

    def _end_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        self._remove_hook()
        logger = _tensorboard_logger(trainer)
        if logger is None or not self._collects_evaluation():
            return
        # The confusion matrix is reduced across processes, so every rank computes it.
        confusion = self._confusion.compute() if self.confusion_matrix and self._confusion is not None else None
        if not trainer.is_global_zero:
            return
        started = time.perf_counter()
        writer, step = logger.experiment, trainer.global_step
        if confusion is not None:
            writer.add_figure(
                f"{split}/confusion_matrix", confusion_matrix_figure(confusion.cpu(), _class_names(trainer)), step
            )
        if self.misclassified and self._first_batch is not None:
            images, labels, predictions = self._first_batch
            figure = misclassified_figure(
                self._denormalize(trainer, images), labels, predictions, self.num_misclassified, _class_names(trainer)
            )
            writer.add_figure(f"{split}/misclassified", figure, step)
        if split == "val":
            self._log_weights_and_activations(trainer, pl_module, writer, step)
        self._insight_seconds += time.perf_counter() - started

    def _log_weights_and_activations(self, trainer: pl.Trainer, pl_module: pl.LightningModule, writer, step) -> None:  # noqa: ANN001
        convolutions = [(name, m) for name, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)]
        if not convolutions:
            return
        if self.filters:
            name, first = convolutions[0]
            weight = first.weight.detach()
            # One tile per output filter (RGB when it reads three channels, else one tile per input channel).
            kernels = weight if weight.shape[1] == 3 else weight.flatten(0, 1).unsqueeze(1)
            nrow = None if weight.shape[1] in (1, 3) else weight.shape[1]
            writer.add_image(f"filters/{name}", tile_grid(kernels, nrow), step)
        if self.feature_maps and self._example is not None:
            activations: dict[str, Tensor] = {}
            handles = [
                module.register_forward_hook(lambda _m, _i, out, name=name: activations.__setitem__(name, out))
                for name, module in convolutions
            ]
            was_training = pl_module.training
            pl_module.eval()  # dropout would blank out random maps
            try:
                with torch.no_grad():
                    pl_module(self._example)
            finally:
                pl_module.train(was_training)
                for handle in handles:
                    handle.remove()
            example = displayable(self._denormalize(trainer, self._example))
            writer.add_image("feature_maps/input", tile_grid(example, 1), step)
            for name, _ in convolutions:
                if name in activations:
                    maps = activations[name][0].unsqueeze(1)  # one tile per channel
                    writer.add_image(f"feature_maps/{name}", tile_grid(maps), step)

    @staticmethod
    def _denormalize(trainer: pl.Trainer, images: Tensor) -> Tensor:
        """Images back on the [0, 1] pixel scale, undoing the data module's normalization."""
        if isinstance(trainer.datamodule, ImageDataModule):
            return trainer.datamodule.denormalize(images)
        images = images.detach().float()  # a data module without the contract: stretch each batch for display
        low, high = images.amin(), images.amax()
        return (images - low) / (high - low).clamp_min(1e-12)

    # -- fit -------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = _tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        if self.hparams:
            self._log_hparams(logger, run_hyperparameters(trainer, pl_module))
        if self.graph:
            self._log_graph(logger, pl_module)

    @staticmethod
    def _log_hparams(logger: TensorBoardLogger, hparams: dict[str, bool | int | float | str]) -> None:
        # The hparams plugin shows, per run, these values and the last value of each metric tag.
        experiment = hparams_api.hparams_config_pb(
            hparams=[hparams_api.HParam(name) for name in hparams],
            metrics=[hparams_api.Metric(tag) for tag in HPARAM_METRICS],
        )
        session = hparams_api.hparams_pb(hparams, trial_id=logger.log_dir)
        # The writer of the run's own folder (as TensorBoardLogger.log_hyperparams does), so the
        # session and its scalars form one run.
        writer = logger.experiment.file_writer
        writer.add_summary(experiment)
        writer.add_summary(session)
        logger.experiment.flush()

    @staticmethod
    def _log_graph(logger: TensorBoardLogger, pl_module: pl.LightningModule) -> None:
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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._draw_this_epoch = True  # validate/test draw once; fit decides per epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start = time.perf_counter()
        self._insight_seconds = 0.0
        self._skipped_epochs = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw_this_epoch = self._logging_epoch(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Keep a reference to the first batch only (no copy, no host sync); drawn at the epoch end.
        if batch_idx == 0 and self.input_grid and isinstance(batch, (tuple, list)):
            self._inputs = batch[0][: self.num_inputs].detach()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        inputs, self._inputs = self._inputs, None
        logger = _tensorboard_logger(trainer)
        if inputs is None or logger is None or not trainer.is_global_zero or not self._draw_this_epoch:
            return
        started = time.perf_counter()
        grid = make_grid(displayable(self._denormalize(trainer, inputs).cpu()), nrow=8, padding=2, pad_value=1.0)
        logger.experiment.add_image("train/inputs", grid, trainer.global_step)
        self._insight_seconds += time.perf_counter() - started

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self._draw_this_epoch:
            self._start_evaluation(trainer, pl_module)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation_batch(pl_module, batch, batch_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._end_evaluation(trainer, pl_module, "val")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._train_start is None:
            return
        seconds = time.perf_counter() - self._train_start
        self._train_start = None
        metrics = {
            TRAIN_SECONDS_TAG: seconds,
            INSIGHT_SECONDS_TAG: self._insight_seconds,
            INSIGHT_SKIPPED_TAG: self._skipped_epochs,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    # -- test ------------------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_evaluation(trainer, pl_module)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation_batch(pl_module, batch, batch_idx)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._end_evaluation(trainer, pl_module, "test")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hook()
