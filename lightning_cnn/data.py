"""MNIST as a LightningDataModule: verified download, seeded split, and batches built from tensors.

The images stay one uint8 tensor (on the accelerator when training on one); a batch is gathered
by index, then converted, augmented and normalized as a whole in ``on_after_batch_transfer``.
No per-sample PIL image or Python transform runs on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, OpenUnitInterval, PositiveFloat, PositiveInt
from torch import Tensor
from torchvision.datasets import MNIST

from lightning_cnn.errors import DataError

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass
class Augmentation:
    """Random affine transforms drawn per image and applied to a whole training batch at once.

    Args:
        degrees: maximum rotation, in degrees, either way.
        translate: maximum shift as a fraction of the image size, along each axis.
        scale: maximum relative zoom in or out (0.1 draws a scale in [0.9, 1.1]).
    """

    degrees: NonNegativeFloat = 10.0
    translate: ClosedUnitInterval = 0.1
    scale: ClosedUnitInterval = 0.1

    def __call__(self, images: Tensor) -> Tensor:
        n = images.shape[0]
        device, dtype = images.device, images.dtype

        def uniform(bound: float) -> Tensor:
            return (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * bound

        angle = uniform(math.radians(self.degrees))
        zoom = 1 + uniform(self.scale)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # affine_grid maps output to input coordinates in [-1, 1], so a shift of t pixels-fraction is 2t.
        theta = torch.stack(
            [
                torch.stack([cos, -sin, uniform(2 * self.translate)], dim=1),
                torch.stack([sin, cos, uniform(2 * self.translate)], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class TensorBatchLoader:
    """Yields ``(images, labels)`` batches gathered by index from tensors held in memory.

    Under distributed training every rank takes a disjoint shard of each epoch's order; all ranks
    yield the same number of batches so that collective operations stay in step. With
    ``shuffle=True`` the order of epoch ``e`` is a permutation drawn from ``seed + e``, identical on
    every rank; Lightning calls :meth:`set_epoch` (through ``.sampler``) before each epoch.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # Lightning calls ``sampler.set_epoch`` on any iterable that has one, and inspects ``batch_sampler``.
        self.sampler, self.batch_sampler = self, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self) -> int:
        largest_shard = math.ceil(len(self.labels) / self.world_size)
        return math.ceil(largest_shard / self.batch_size)

    def __len__(self) -> int:
        return self._num_batches()

    def shard_indices(self) -> Tensor:
        """The indices this rank visits in the current epoch, in order."""
        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        shard = self.shard_indices().to(self.images.device)
        batches = shard.split(self.batch_size)
        if len(batches) < self._num_batches():
            # A shard one sample short of its neighbours' could end a batch early; split it into
            # as many (slightly smaller) batches as the other ranks yield instead.
            batches = shard.tensor_split(self._num_batches())
        for index in batches:
            yield self.images[index], self.labels[index]


class MNISTDataModule(pl.LightningDataModule):
    """The MNIST digits: 60k training images split into train/val, and the official 10k test set.

    Args:
        data_dir: root folder; the dataset lives in ``<data_dir>/MNIST/raw``.
        batch_size: training batch size per device.
        eval_batch_size: batch size for validation, test and predict (per device).
        val_split: validation size taken from the 60k training images, as a count or a fraction.
        split_seed: seed of the train/val split; the split never depends on the global seed.
        mean: normalization mean, on the [0, 1] pixel scale.
        std: normalization standard deviation, on the [0, 1] pixel scale.
        augmentation: random affine augmentation of training batches; ``null`` turns it off.
        download: fetch missing files from the official mirrors (MD5-verified).
    """

    num_classes = 10
    image_shape = (1, 28, 28)

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        val_split: PositiveInt | OpenUnitInterval = 5000,
        split_seed: int = 42,
        mean: float = 0.1307,
        std: PositiveFloat = 0.3081,
        augmentation: Augmentation | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_split, self.split_seed = val_split, split_seed
        self.mean, self.std = mean, std
        self.augmentation = augmentation
        self.download = download
        self.shuffle_seed = 0
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self.test_images = self.test_labels = None

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def prepare_data(self) -> None:
        if not self.download:
            return
        for train in (True, False):
            try:
                MNIST(self.data_dir, train=train, download=True)
            except (RuntimeError, OSError) as error:
                names = ", ".join(MNIST_FILES)
                raise DataError(
                    f"could not download MNIST into {self.raw_dir} ({error}); without network access, "
                    f"copy the four official files {names} into {self.raw_dir}/ and run again"
                ) from None

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            dataset = MNIST(self.data_dir, train=train, download=False)
        except RuntimeError:
            raise DataError(
                f"MNIST is not in {self.raw_dir}; set data.download=true, or copy the four official "
                f"files {', '.join(MNIST_FILES)} there"
            ) from None
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets

    def split_indices(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """Train and validation indices into the training set, drawn from ``split_seed`` alone."""
        if isinstance(self.val_split, float):
            val_size = round(self.val_split * num_samples)
        else:
            val_size = self.val_split
        if not 0 < val_size < num_samples:
            raise DataError(
                f"data.val_split={self.val_split} leaves no training or no validation images out of "
                f"{num_samples}; choose a count below {num_samples} or a fraction in (0, 1)"
            )
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(self.split_seed))
        return order[val_size:], order[:val_size]

    def setup(self, stage: str) -> None:
        device = torch.device("cpu")
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            # One shuffling seed for every rank, derived from the global seed (seed_everything).
            self.shuffle_seed = int(self.trainer.strategy.broadcast(torch.initial_seed() % 2**31))
        if stage in ("fit", "validate") and self.train_images is None:
            images, labels = self._load(train=True)
            train_index, val_index = self.split_indices(len(labels))
            self.train_images, self.train_labels = images[train_index].to(device), labels[train_index].to(device)
            self.val_images, self.val_labels = images[val_index].to(device), labels[val_index].to(device)
        if stage in ("test", "predict") and self.test_images is None:
            images, labels = self._load(train=False)
            self.test_images, self.test_labels = images.to(device), labels.to(device)

    def _loader(self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool = False) -> TensorBatchLoader:
        rank, world_size = 0, 1
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        return TensorBatchLoader(images, labels, batch_size, shuffle, self.shuffle_seed, rank, world_size)

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.train_images, self.train_labels, self.batch_size, shuffle=True)

    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.val_images, self.val_labels, self.eval_batch_size)

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.test_images, self.test_labels, self.eval_batch_size)

    def predict_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.test_images, self.test_labels, self.eval_batch_size)

    def normalize(self, images: Tensor) -> Tensor:
        """Standardize images on the [0, 1] pixel scale with the configured mean and std."""
        return (images - self.mean) / self.std

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        # Runs on the device, once per batch: uint8 -> [0, 1] (as ToTensor), augment, normalize.
        if not (isinstance(batch, (tuple, list)) and batch[0].dtype == torch.uint8):
            return batch  # not one of this module's raw batches (e.g. the model summary's example input)
        images, labels = batch
        images = images.float().div_(255)
        if self.augmentation is not None and self.trainer is not None and self.trainer.training:
            images = self.augmentation(images)
        return self.normalize(images), labels
