"""The training epoch's accuracy and loss, summed on the device per step and reduced once per epoch, and the
in-place compile option: values equal a direct computation, and checkpoints keep the eager parameter names."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_cnn.data import TensorBatchLoader
from lightning_cnn.models import TwoConvNet
from lightning_cnn.module import ImageClassifier


class Batches(pl.LightningDataModule):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def train_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self.images, self.labels, self.batch_size)


@pytest.mark.parametrize("batch_size", [16, 24])  # 24 leaves a short last batch: the mean is per image
def test_train_epoch_metrics_equal_the_accuracy_and_mean_loss_over_every_image(batch_size):
    torch.manual_seed(0)
    images, labels = torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))
    # A learning rate of 0 keeps the weights fixed, so the epoch's figures can be recomputed afterwards.
    model = ImageClassifier(
        nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)),
        optimizer=functools.partial(torch.optim.SGD, lr=0.0),
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=Batches(images, labels, batch_size))
    with torch.no_grad():
        logits = model(images)
    expected_accuracy = (logits.argmax(dim=1) == labels).float().mean()
    expected_loss = F.cross_entropy(logits, labels)
    # Two epochs: the sums start again at each epoch, or the second epoch would count the images twice.
    assert model.train_count == len(labels)
    assert trainer.callback_metrics["train/acc"].item() == pytest.approx(expected_accuracy.item(), abs=1e-6)
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(expected_loss.item(), rel=1e-5)


def test_compile_mode_compiles_the_backbone_in_place_keeping_parameter_names(monkeypatch):
    modes: list[str] = []

    def record(function, **options):  # noqa: ANN001, ANN202 (stands in for torch.compile, which nn.Module.compile calls)
        modes.append(options.get("mode"))
        return function

    monkeypatch.setattr(torch, "compile", record)
    model = ImageClassifier(TwoConvNet(), compile_mode="reduce-overhead")
    names = list(model.state_dict())
    model.configure_model()
    assert modes == ["reduce-overhead"]
    assert isinstance(model.backbone, TwoConvNet)  # not a wrapper: checkpoints load into an eager network
    assert list(model.state_dict()) == names
    assert ImageClassifier(TwoConvNet()).hparams.compile_mode is None


def test_cuda_graph_steps_are_marked_only_under_reduce_overhead(monkeypatch):
    marks: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    batch = (torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    ImageClassifier(TwoConvNet(), compile_mode="default").on_train_batch_start(batch, 0)
    assert marks == []
    graphed = ImageClassifier(TwoConvNet(), compile_mode="reduce-overhead")
    graphed.on_train_batch_start(batch, 0)
    graphed.on_validation_batch_start(batch, 0)
    assert marks == [1, 1]
