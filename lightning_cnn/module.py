"""One LightningModule for every architecture: cross-entropy training with torchmetrics accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from lightning_cnn.checkpoints import rename_positional_keys
from lightning_cnn.errors import UserError

SPLITS = ("train", "val", "test")
CALIBRATION_BINS = 15


class ModelConfigError(UserError, ValueError):
    """A model option out of its range (a ValueError too, for code that catches those)."""


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; training stops before any checkpoint holds such weights."""


class ImageClassifier(pl.LightningModule):
    """Trains any image classifier that maps a batch of images to logits.

    Args:
        backbone: the architecture (any ``nn.Module``; choose it in YAML with ``class_path``).
        num_classes: number of classes (linked from the data module by the CLI).
        input_shape: shape of one image, ``(channels, height, width)``, for the model summary.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        optimizer: any torch optimizer, with its arguments.
        scheduler: an optional LR scheduler. Schedulers that take ``total_steps`` (OneCycleLR)
            get the run's total number of optimizer steps when the config leaves it out.
        scheduler_interval: step the scheduler every ``epoch`` or every optimizer ``step``.
        compile_mode: compile the backbone with ``torch.compile`` in this mode when fit, validate, test
            or predict sets up (``reduce-overhead`` adds CUDA graphs); None runs it eagerly. Compiled in
            place, so parameter names and checkpoints are those of the eager network.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: PositiveInt = 10,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        compile_mode: Literal["default", "reduce-overhead", "max-autotune"] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ModelConfigError(f"model.label_smoothing={label_smoothing} is out of range; use a value in [0, 1)")
        if scheduler_interval not in ("epoch", "step"):
            raise ModelConfigError(
                f"model.scheduler_interval={scheduler_interval!r} is not valid; use 'epoch' or 'step'"
            )
        self.save_hyperparameters()
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.example_input_array = torch.zeros(2, *input_shape)
        # A training step's FLOPs (forward and backward) for one batch, measured when fit starts (run record).
        self.train_flops_per_batch: int | None = None
        # One metric object per split, so Lightning computes and reduces each at its epoch end.
        # ("train" cannot be a ModuleDict key: it would shadow nn.Module.train.)
        # Per-update input checks would sync with the host on every step (torch.unique of the labels, a
        # NaN test of the loss); cross_entropy already rejects bad labels, and a NaN loss shows as NaN.
        self.accuracy = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False) for s in SPLITS}
        )
        self.mean_loss = nn.ModuleDict({f"{s}_loss": MeanMetric(nan_strategy="disable") for s in SPLITS})
        # Expected calibration error of validation and test: how far the confidence of the predicted class is
        # from its accuracy, over 15 equal-width confidence bins (L1, weighted by the bins' image counts).
        self.calibration = nn.ModuleDict(
            {
                f"{s}_ece": MulticlassCalibrationError(num_classes, n_bins=CALIBRATION_BINS, validate_args=False)
                for s in ("val", "test")
            }
        )
        # Training steps only add to plain device sums (a torchmetrics update costs several times more
        # Python per step); the epoch's sums go to these means once, and torchmetrics reduces them across ranks.
        self.accuracy["train_acc"] = MeanMetric(nan_strategy="ignore")
        self.mean_loss["train_loss"] = MeanMetric(nan_strategy="ignore")
        self.register_buffer("train_correct", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("train_loss_sum", torch.zeros(()), persistent=False)
        self.train_count = 0
        self.val_acc_best = MaxMetric()
        # The first global step whose training loss was not finite (-1: none). It is updated on the
        # device every step and read on the host only at the checks, so there is no sync per step.
        self.register_buffer("first_nonfinite_step", torch.tensor(-1), persistent=False)

    def configure_model(self) -> None:
        # Lightning calls this hook at every stage's setup; nn.Module.compile is idempotent.
        if self.hparams.get("compile_mode") is not None:
            self.backbone.compile(mode=self.hparams.compile_mode)

    def on_train_batch_start(self, batch: object, batch_idx: int, dataloader_idx: int = 0) -> None:
        # CUDA graphs (reduce-overhead) reuse their output memory: each step must be declared as a new one.
        if self.hparams.get("compile_mode") == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    on_validation_batch_start = on_test_batch_start = on_predict_batch_start = on_train_batch_start

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints of the zoo's former anonymous sequences (backbone.0.weight) load into the named layers.
        checkpoint["state_dict"] = rename_positional_keys(checkpoint["state_dict"], self)

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    def _shared_step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        """The loss and the logits of one batch, with the split's metrics updated."""
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        if split == "train":
            self.train_correct += (logits.detach().argmax(dim=1) == labels).sum()
            self.train_loss_sum += loss.detach() * labels.numel()
            self.train_count += labels.numel()
            return loss, logits
        # Metric updates stay on the device; values are computed and synced once per epoch.
        accuracy, mean_loss = self.accuracy[f"{split}_acc"], self.mean_loss[f"{split}_loss"]
        accuracy.update(logits.detach(), labels)
        self.calibration[f"{split}_ece"].update(logits.detach().float().softmax(dim=1), labels)
        # The loss once per image: a mean weighted by batch size (nan_strategy="disable" ignores `weight`).
        mean_loss.update(loss.detach().expand(labels.numel()))
        return loss, logits

    def _log_epoch_metrics(self, split: str) -> None:
        # Logged once per epoch, not per step: each self.log call costs Lightning about half a
        # millisecond of Python (it moves the metric object to the device), several % of a small step.
        self.log(f"{split}/acc", self.accuracy[f"{split}_acc"], prog_bar=split != "train")
        self.log(f"{split}/loss", self.mean_loss[f"{split}_loss"])
        if split != "train":
            self.log(f"{split}/ece", self.calibration[f"{split}_ece"])

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._shared_step(batch, "train")
        bad = ~torch.isfinite(loss.detach()) & (self.first_nonfinite_step < 0)
        self.first_nonfinite_step = torch.where(bad, self.global_step, self.first_nonfinite_step)
        return loss

    def check_loss_finite(self) -> None:
        """Raise NonFiniteLossError if any training loss so far was NaN or infinite (one host sync, all ranks)."""
        first = self.first_nonfinite_step
        if self.trainer.world_size > 1:  # every rank must stop together, whichever saw it
            first = self.trainer.strategy.reduce(first.float(), reduce_op="max")
        first = int(first.item())
        if first >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite at step {first} (epoch {self.current_epoch}), so "
                "training stopped and the checkpoints saved before it (last.ckpt) keep the last good weights; "
                "lower the learning rate or set trainer.gradient_clip_val (and check data.mean/data.std), "
                "then continue with --ckpt_path last"
            )

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        # Checked every log_every_n_steps steps (one host sync each) so a diverged run stops early.
        if (self.global_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0:
            self.check_loss_finite()

    def on_validation_start(self) -> None:
        # Before validation ends, where ModelCheckpoint saves: non-finite weights never reach a checkpoint.
        if self.trainer.training or self.trainer.state.fn == "fit":
            self.check_loss_finite()

    def on_train_epoch_start(self) -> None:
        self.train_correct.zero_()
        self.train_loss_sum.zero_()
        self.train_count = 0

    def on_train_epoch_end(self) -> None:
        self.check_loss_finite()
        if self.train_count:  # weighted by this rank's images, so the reduced mean is over all images
            self.accuracy["train_acc"].update(self.train_correct / self.train_count, self.train_count)
            self.mean_loss["train_loss"].update(self.train_loss_sum / self.train_count, self.train_count)
        self._log_epoch_metrics("train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # The dashboards (misclassified examples, confusion matrix) read the logits from here.
        _, logits = self._shared_step(batch, "val")
        return {"logits": logits.detach()}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        _, logits = self._shared_step(batch, "test")
        return {"logits": logits.detach()}

    @property
    def flops_per_batch(self) -> int | None:
        """What Lightning's ThroughputMonitor reads: a training batch's FLOPs while training, else unknown."""
        return self.train_flops_per_batch if self.training else None

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        probabilities = self(images).softmax(dim=1)
        return {"prediction": probabilities.argmax(dim=1), "probabilities": probabilities}

    def on_train_start(self) -> None:
        # The sanity check runs validation before training; its numbers must not count as a best.
        self.val_acc_best.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")  # also in the sanity check, so that Lightning resets the metrics after it
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.accuracy["val_acc"].compute())
        # The value is already reduced across ranks (val_acc synced); a max over identical values keeps it exact
        # and tells Lightning it is synced.
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True, reduce_fx="max")

    def check_backbone(self) -> None:
        """Raise a ModelConfigError unless the backbone has trainable weights and maps images to one logit per class.

        Checked on the summary's example input before anything runs, so that a network that cannot
        train stops with one sentence instead of a traceback from the first training step.
        """
        name = type(self.backbone).__name__
        if not any(parameter.requires_grad for parameter in self.backbone.parameters()):
            raise ModelConfigError(
                f"model.backbone {name} has no trainable parameters; choose a network such as "
                "lightning_cnn.models.TwoConvNet"
            )
        images = self.example_input_array
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                logits = self.backbone(images.to(self.device))
        except (RuntimeError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelConfigError(
                f"model.backbone {name} cannot take images of shape {tuple(images.shape[1:])} ({reason}); "
                "choose a network built for this data's image size and channels"
            ) from None
        finally:
            self.train(was_training)
        expected = (images.shape[0], self.hparams.num_classes)
        if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
            shape = tuple(logits.shape[1:]) if isinstance(logits, Tensor) else type(logits).__name__
            raise ModelConfigError(
                f"model.backbone {name} returns outputs of shape {shape} per image, where the data has "
                f"{self.hparams.num_classes} "
                f"classes; set the network's number of outputs (model.backbone.init_args.num_classes) to "
                f"{self.hparams.num_classes}"
            )

    def check_optimization(self) -> None:
        """Raise a ModelConfigError when the optimizer or schedule cannot train: a learning rate that is not positive.

        The optimizer and scheduler are built once on a stand-in step count, before any run folder exists.
        """
        try:
            optimizer = self.optimizer_factory(self.parameters())
        except ValueError as error:  # torch's own range checks ("Invalid learning rate: -0.1")
            raise ModelConfigError(f"model.optimizer: {error}; use a positive learning rate") from None
        for group in optimizer.param_groups:
            if isinstance(group.get("lr"), (int, float)) and not group["lr"] > 0:
                raise ModelConfigError(
                    f"model.optimizer {type(optimizer).__name__} has learning rate {group['lr']}; "
                    "set model.optimizer.init_args.lr to a positive value"
                )
        if self.scheduler_factory is None:
            return
        try:
            self._build_scheduler(optimizer, lambda: 100)
        except ValueError as error:
            raise ModelConfigError(f"model.scheduler: {error}; check model.scheduler.init_args") from None
        for group in optimizer.param_groups:
            if "max_lr" in group and not group["max_lr"] > 0:
                raise ModelConfigError(
                    f"model.scheduler has max_lr {group['max_lr']}; set model.scheduler.init_args.max_lr to a "
                    "positive value"
                )

    def monitors_validation(self) -> bool:
        """Whether the learning-rate schedule watches a validation metric (ReduceLROnPlateau on val/loss)."""
        if self.scheduler_factory is None:
            return False
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = self._build_scheduler(optimizer, lambda: 100)
        return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def configure_optimizers(self):  # noqa: ANN201 (Lightning accepts several return shapes)
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self._build_scheduler(optimizer, lambda: int(self.trainer.estimated_stepping_batches))
        config = {"scheduler": scheduler, "interval": self.hparams.scheduler_interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _build_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: Callable[[], int]):  # noqa: ANN202
        """The configured scheduler; one that needs the run's length (OneCycleLR) and was given none gets
        ``total_steps``."""
        try:
            return self.scheduler_factory(optimizer)
        except ValueError as error:
            # OneCycleLR refuses to start without total_steps (or epochs and steps_per_epoch); it
            # checks that before touching the optimizer. Only then is the run's own length supplied.
            try:
                return self.scheduler_factory(optimizer, total_steps=total_steps())
            except (TypeError, ValueError):
                raise error from None
