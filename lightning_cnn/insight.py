"""What a run shows in TensorBoard beyond its loss and accuracy curves.

``TensorBoardInsight`` logs the hyperparameters with the final metrics (the hparams tab), the model
graph, the training time, and at epoch ends images of what the network sees, learned and gets wrong.
``LearningRateLogger`` is Lightning's learning-rate monitor, logging under ``train/``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tensorboard.plugins.hparams import summary_v2 as hparams_api
from torch import Tensor, nn
from torch.nn.functional import interpolate
from torch.utils.hooks import RemovableHandle
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from lightning_cnn.data import ImageDataModule

# Scalars shown beside the hyperparameters in the hparams tab (their last logged value per run).
HPARAM_METRICS = (
    "val/acc_best",
    "val/acc",
    "val/loss",
    "train/loss",
    "test/acc",
    "test/loss",
    "time/train_seconds",
)
TRAIN_SECONDS_TAG = "time/train_seconds"
INSIGHT_SECONDS_TAG = "time/insight_seconds"
INSIGHT_SKIPPED_TAG = "time/insight_skipped_epochs"
# Small kernels and feature maps are upscaled (nearest) to at least this many pixels a side, to be visible.
MIN_DISPLAY_PIXELS = 48


def _tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def _upscale(images: Tensor) -> Tensor:
    """Nearest-neighbour upscaling of a ``(N, C, H, W)`` batch so that small maps stay legible."""
    factor = math.ceil(MIN_DISPLAY_PIXELS / min(images.shape[-2:]))
    return interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def _displayable(images: Tensor) -> Tensor:
    """A ``(N, C, H, W)`` batch with one or three channels, as images can be shown (others are averaged to gray)."""
    return images if images.shape[1] in (1, 3) else images.mean(dim=1, keepdim=True)


def _grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """A grid of single images, each stretched to its own [0, 1] range (filters and feature maps)."""
    images = _upscale(images.detach().float().cpu())
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return make_grid(images, nrow=nrow, normalize=True, scale_each=True, padding=2, pad_value=1.0)


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
    label_smoothing = pl_module.hparams.get("label_smoothing")
    if isinstance(label_smoothing, (int, float)):
        hparams["label_smoothing"] = float(label_smoothing)
    return hparams


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
            writer.add_image(f"filters/{name}", _grid(kernels, nrow), step)
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
            example = _displayable(self._denormalize(trainer, self._example))
            writer.add_image("feature_maps/input", _grid(example, 1), step)
            for name, _ in convolutions:
                if name in activations:
                    maps = activations[name][0].unsqueeze(1)  # one tile per channel
                    writer.add_image(f"feature_maps/{name}", _grid(maps), step)

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
        writer = logger.experiment._get_file_writer()
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
        grid = make_grid(_displayable(self._denormalize(trainer, inputs).cpu()), nrow=8, padding=2, pad_value=1.0)
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


def _class_names(trainer: pl.Trainer) -> list[str] | None:
    return trainer.datamodule.class_names if isinstance(trainer.datamodule, ImageDataModule) else None


def confusion_matrix_figure(confusion: Tensor, class_names: list[str] | None = None):  # noqa: ANN201 (a matplotlib Figure)
    """Counts of (true, predicted) class pairs as a heat map; empty cells stay blank."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no display backend

    num_classes = confusion.shape[0]
    figure = Figure(figsize=(4.5, 4.5), dpi=100)
    axes = figure.add_axes((0.13, 0.11, 0.84, 0.84))  # fixed layout: tight_layout costs more than the drawing
    # A compressed colour scale, so that a handful of errors shows beside a diagonal of thousands.
    axes.imshow(confusion.numpy(), cmap="Blues", norm=PowerNorm(gamma=0.3, vmin=0))
    high = int(confusion.max())
    # Text is what costs time to draw: label the non-zero cells only (mostly the diagonal).
    for true, predicted in confusion.nonzero().tolist():
        count = int(confusion[true, predicted])
        color = "white" if count > high / 2 else "black"
        axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color=color)
    labels = class_names if class_names is not None else [str(k) for k in range(num_classes)]
    axes.set_xticks(range(num_classes), labels, rotation=90 if max(map(len, labels)) > 2 else 0)
    axes.set_yticks(range(num_classes), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    return figure


def misclassified_figure(  # noqa: ANN201
    images: Tensor, labels: Tensor, predictions: Tensor, limit: int, class_names: list[str] | None = None
):
    """Up to ``limit`` misclassified images (on the [0, 1] scale), each marked ``predicted/true``."""
    from matplotlib.figure import Figure

    wrong = (predictions != labels).nonzero().flatten()[:limit].cpu()
    images, labels, predictions = _displayable(images[wrong].cpu()), labels[wrong].cpu(), predictions[wrong].cpu()
    columns, padding = 8, 2
    rows = max(1, math.ceil(len(wrong) / columns))
    figure = Figure(figsize=(columns * 0.9, rows * 0.9 + 0.3), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0 - 0.3 / (rows * 0.9 + 0.3)))
    axes.axis("off")
    height, width = images.shape[-2:] if len(wrong) else (28, 28)
    if len(wrong):
        # One image of all tiles, then one label per tile: far cheaper than a subplot per example.
        grid = make_grid(images, nrow=columns, padding=padding, pad_value=1.0)
        axes.imshow(grid.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
        axes.set_xlim(-0.5, columns * (width + padding) + padding - 0.5)
    for index, (predicted, true) in enumerate(zip(predictions.tolist(), labels.tolist(), strict=True)):
        row, column = divmod(index, columns)
        x, y = column * (width + padding) + padding + 1, row * (height + padding) + padding + 1
        if class_names is not None:
            predicted, true = class_names[predicted], class_names[true]
        axes.text(x, y, f"{predicted}/{true}", color="red", fontsize=8, va="top", fontweight="bold")
    title = "predicted/true" if len(wrong) else "no misclassified examples in the first batch"
    figure.suptitle(title, fontsize=9, y=0.995, va="top")
    return figure


class LearningRateLogger(LearningRateMonitor):
    """Lightning's LearningRateMonitor, with its tags in the training group (``train/lr-Adam``).

    It stays idle when the trainer has no logger (``--trainer.logger false``) instead of failing.
    """

    def on_train_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)

    def _extract_stats(self, trainer: pl.Trainer, interval: str) -> dict[str, Any]:
        return {f"train/{name}": value for name, value in super()._extract_stats(trainer, interval).items()}
