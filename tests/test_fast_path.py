"""The fast data path changes no result: same images and labels as torchvision's pipeline, every index once per epoch.

The reference is what the tutorials do: torchvision's MNIST dataset with ``ToTensor`` + ``Normalize``,
one sample at a time. The fast path converts the dataset once and gathers batches by index.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torchvision import transforms
from torchvision.datasets import MNIST

from lightning_cnn.data import MNISTDataModule, TensorBatchLoader
from lightning_cnn.models import TwoConvNet
from lightning_cnn.module import ImageClassifier


def reference_dataset(data_dir: Path, train: bool, mean: float, std: float) -> MNIST:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    return MNIST(data_dir, train=train, transform=transform)


def reference_batch(dataset: MNIST, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [dataset[i] for i in indices.tolist()]
    return torch.stack([image for image, _ in samples]), torch.tensor([label for _, label in samples])


def fast_batches(datamodule: MNISTDataModule, loader: TensorBatchLoader):
    for batch in loader:
        yield datamodule.on_after_batch_transfer(batch, 0)


def assert_split_matches_reference(datamodule: MNISTDataModule, split: str, dataset: MNIST) -> int:
    """Every batch of ``split`` equals the reference on the dataset indices it stands for; returns the count."""
    train_index, val_index = datamodule.split_indices(len(dataset))
    loader, dataset_index = {
        "train": (datamodule.train_dataloader(), train_index),
        "val": (datamodule.val_dataloader(), val_index),
        "test": (datamodule.test_dataloader(), torch.arange(len(dataset))),
    }[split]
    positions = loader.shard_indices().split(loader.batch_size)
    count = 0
    for position, (images, labels) in zip(positions, fast_batches(datamodule, loader), strict=True):
        expected_images, expected_labels = reference_batch(dataset, dataset_index[position])
        assert images.dtype == torch.float32 and images.shape == expected_images.shape
        torch.testing.assert_close(images, expected_images, rtol=1e-5, atol=1e-5)
        assert torch.equal(labels, expected_labels)
        count += len(labels)
    return count


@pytest.mark.parametrize(("mean", "std"), [(0.1307, 0.3081), (0.5, 0.5)])
def test_every_batch_of_every_split_equals_to_tensor_and_normalize(synthetic_data_dir, mean, std):
    datamodule = MNISTDataModule(
        data_dir=synthetic_data_dir, batch_size=64, eval_batch_size=32, val_split=100, mean=mean, std=std
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    train_reference = reference_dataset(synthetic_data_dir, train=True, mean=mean, std=std)
    test_reference = reference_dataset(synthetic_data_dir, train=False, mean=mean, std=std)
    assert assert_split_matches_reference(datamodule, "train", train_reference) == 500
    assert assert_split_matches_reference(datamodule, "val", train_reference) == 100
    assert assert_split_matches_reference(datamodule, "test", test_reference) == 200


class BatchRecorder(pl.Callback):
    """Keeps every training batch as the module receives it, and each epoch's order of indices."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.orders: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.orders.append(trainer.train_dataloader.shard_indices())
        self.batches.append([])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        images, labels = batch
        self.batches[-1].append((images.detach().clone(), labels.clone()))


def test_training_batches_in_a_real_fit_equal_the_reference_and_cover_each_index_once(synthetic_data_dir):
    pl.seed_everything(3, verbose=False)
    datamodule = MNISTDataModule(data_dir=synthetic_data_dir, batch_size=64, val_split=100)
    module = ImageClassifier(TwoConvNet(), optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.5))
    recorder = BatchRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(module, datamodule)

    reference = reference_dataset(synthetic_data_dir, train=True, mean=0.1307, std=0.3081)
    train_index, _ = datamodule.split_indices(len(reference))
    assert len(recorder.batches) == 3
    for order, batches in zip(recorder.orders, recorder.batches, strict=True):
        assert sorted(order.tolist()) == list(range(500))  # every training index exactly once
        seen = torch.cat([labels for _, labels in batches])
        assert len(seen) == 500
        images = torch.cat([images for images, _ in batches])
        expected_images, expected_labels = reference_batch(reference, train_index[order])
        torch.testing.assert_close(images, expected_images, rtol=1e-5, atol=1e-5)
        assert torch.equal(seen, expected_labels)
    # A new order every epoch.
    assert not torch.equal(recorder.orders[0], recorder.orders[1])
    assert not torch.equal(recorder.orders[1], recorder.orders[2])


@pytest.mark.parametrize("num_samples", [600, 601, 599])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_shards_are_disjoint_cover_every_index_and_step_together(num_samples, world_size):
    # The "images" are the indices themselves, so each yielded batch says which samples it holds.
    indices = torch.arange(num_samples)
    for epoch in range(2):
        yielded = []
        for rank in range(world_size):
            loader = TensorBatchLoader(indices, indices, 64, shuffle=True, seed=5, rank=rank, world_size=world_size)
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader)  # every rank yields the same number of batches
            shard = torch.cat([images for images, _ in batches])
            assert torch.equal(shard, loader.shard_indices())
            assert torch.equal(shard, torch.cat([labels for _, labels in batches]))
            yielded.append(shard)
        everything = torch.cat(yielded)
        assert len(everything) == num_samples
        assert torch.equal(everything.sort().values, indices)  # disjoint and covering: each index once
        if epoch == 0:
            first_epoch = everything
        else:
            assert not torch.equal(everything, first_epoch)


@pytest.mark.slow
def test_real_mnist_fast_path_equals_to_tensor_and_normalize(real_data_dir):
    datamodule = MNISTDataModule(data_dir=real_data_dir, batch_size=64, eval_batch_size=1000)
    datamodule.prepare_data()  # extracts the verified .gz archives, as a first run does
    datamodule.setup("fit")
    datamodule.setup("test")
    train_reference = reference_dataset(real_data_dir, train=True, mean=0.1307, std=0.3081)
    test_reference = reference_dataset(real_data_dir, train=False, mean=0.1307, std=0.3081)
    assert assert_split_matches_reference(datamodule, "train", train_reference) == 55_000
    assert assert_split_matches_reference(datamodule, "val", train_reference) == 5_000
    assert assert_split_matches_reference(datamodule, "test", test_reference) == 10_000
