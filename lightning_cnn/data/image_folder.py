"""The user's own labelled images, one sub-folder per class, as a LightningDataModule.

By default the images are decoded once, resized and held as tensors, like MNIST (the fast path of
``InMemoryImageDataModule``). A set larger than ``memory_budget_mb`` stops with one sentence that
names ``streaming``, which reads the images from disk batch by batch through a torch DataLoader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder

from lightning_cnn.data.augmentation import Augmentation
from lightning_cnn.data.base import ChannelValues
from lightning_cnn.data.folders import check_same_classes, decode_all, read_resized, scan_folder
from lightning_cnn.data.in_memory import InMemoryImageDataModule, Pixels, held_out_size, normalize_
from lightning_cnn.data.splits import HeldOutSize
from lightning_cnn.data.statistics import histogram_statistics, pixel_histogram
from lightning_cnn.errors import DataError

SPLITS = ("train", "val", "test")


class IndexedImages(Dataset):
    """Predict items of a streamed split: ``(image, row index into predict_names)``."""

    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index][0], index


class ImageFolderDataModule(InMemoryImageDataModule):
    """Labelled images in torchvision's ImageFolder layout: ``<root>/<class name>/*.png|jpg|bmp|...``.

    Class names are the folder names, in sorted order (labels 0, 1, ...). Files that are not images
    are named and skipped.

    Args:
        train_root: folder of the training images, one sub-folder per class.
        test_root: folder of the test images, with the same class folders; null: ``test_split`` of the
            training images is held out for testing.
        image_size: every image is resized to ``image_size`` x ``image_size`` pixels.
        channels: 1 (grayscale) or 3 (RGB).
        batch_size: training batch size per device.
        eval_batch_size: batch size for validation, test and predict (per device).
        val_split: validation images held out of ``train_root``, as a count or a fraction; 0: no validation.
        test_split: test images held out of ``train_root`` when there is no ``test_root``, as a count or a fraction.
        split_seed: seed of the train/val/test split.
        mean: normalization mean on the [0, 1] scale, one value or one per channel; null: computed from the
            training images (one pass over them at setup).
        std: normalization standard deviation, likewise.
        augmentation: random affine augmentation of training batches; ``null`` turns it off.
        predict_path: images to ``predict`` instead of the test images (a file, a folder or a glob),
            resized as the training images were.
        memory_budget_mb: most memory (MiB) the decoded images may take as float tensors (on the training
            device); a larger set stops with an error unless ``streaming`` is set.
        streaming: read the images from disk in every epoch through a torch DataLoader instead of holding them.
        num_workers: DataLoader worker processes when streaming.
    """

    picture_kind = "images"

    def __init__(
        self,
        train_root: str | Path,
        test_root: str | Path | None = None,
        image_size: PositiveInt = 28,
        channels: Literal[1, 3] = 1,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        val_split: HeldOutSize = 0.1,
        test_split: HeldOutSize = 0.1,
        split_seed: int = 42,
        mean: float | list[float] | None = None,
        std: PositiveFloat | list[PositiveFloat] | None = None,
        augmentation: Augmentation | None = None,
        predict_path: str | None = None,
        memory_budget_mb: PositiveFloat = 4096.0,
        streaming: bool = False,
        num_workers: NonNegativeInt = 2,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, val_split, split_seed, mean, std, augmentation, predict_path)
        self.save_hyperparameters()
        self.train_root, self.test_root = Path(train_root), None if test_root is None else Path(test_root)
        # Plain ints: jsonargparse's PositiveInt would reach the checkpoint (via the model's input_shape), which
        # weights-only loading refuses to unpickle.
        self.image_size, self.channels = int(image_size), int(channels)
        self.test_split = test_split
        self.streaming, self.num_workers = streaming, num_workers
        self.image_shape = (self.channels, self.image_size, self.image_size)
        self.memory_budget_mb = memory_budget_mb
        self._folders: tuple[ImageFolder, ImageFolder | None] | None = None
        self._split_indices: dict[str, list[int]] | None = None
        self._decoded: dict[str, tuple[Tensor, Tensor, list[str]]] = {}
        self._default_normalization: tuple[ChannelValues, ChannelValues] | None = None

    # -- the folders, scanned when first needed -------------------------------------------------------
    # Not in __init__: jsonargparse would wrap an error raised there into its own multi-line message.
    # The CLI reads num_classes right after building the module, so a bad folder still stops before any run folder.
    def _scan(self) -> tuple[ImageFolder, ImageFolder | None]:
        if self._folders is None:
            train = scan_folder(self.train_root, "train_root", self.channels, self.image_size)
            test = None
            if self.test_root is not None:
                test = scan_folder(self.test_root, "test_root", self.channels, self.image_size)
                check_same_classes(train, test)
            self.check_channel_values()
            count = len(train.samples) + (len(test.samples) if test is not None else 0)
            size_mb = count * self.channels * self.image_size**2 * 4 / 2**20
            if not self.streaming and size_mb > self.memory_budget_mb:
                raise self._over_budget(count, size_mb, self.memory_budget_mb)
            self._folders = (train, test)
        return self._folders

    @property
    def train_folder(self) -> ImageFolder:
        return self._scan()[0]

    @property
    def test_folder(self) -> ImageFolder | None:
        return self._scan()[1]

    @property
    def num_classes(self) -> int:
        return len(self.train_folder.classes)

    @property
    def split_indices_by_name(self) -> dict[str, list[int]]:
        if self._split_indices is None:
            self._split_indices = self._split()
        return self._split_indices

    def _over_budget(self, count: int, size_mb: float, budget_mb: float) -> Exception:
        return DataError(
            f"the {count} images at {self.image_size}x{self.image_size}x{self.channels} take {size_mb:.0f} MiB "
            f"as float tensors, over data.memory_budget_mb={budget_mb:g}; set data.streaming=true to read them "
            "from disk batch by batch (slower), lower data.image_size, or raise data.memory_budget_mb"
        )

    def check_channel_values(self) -> None:
        """Raise a DataError when ``mean`` or ``std`` lists a number of values other than one per channel."""
        for option, values in (("mean", self.configured_mean), ("std", self.configured_std)):
            if isinstance(values, (list, tuple)) and len(values) not in (1, self.channels):
                raise DataError(
                    f"data.{option} has {len(values)} values for images of {self.channels} channels; "
                    f"give one value, or one per channel"
                )

    @property
    def class_names(self) -> list[str]:
        return list(self.train_folder.classes)

    # -- splits -------------------------------------------------------------------------------------
    def _split(self) -> dict[str, list[int]]:
        """Indices into ``train_folder.samples`` of each split, drawn from ``split_seed`` alone (test: held out
        only without ``test_root``)."""
        count = len(self.train_folder.samples)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        test_size = 0
        if self.test_root is None:
            test_size = held_out_size(self.test_split, count, "test_split", "test", "(or set data.test_root)")
        val_size = 0
        if self.has_validation:
            val_size = held_out_size(self.val_split, count - test_size, "val_split", "validation", "(0: none)")
        return {
            "test": order[:test_size],
            "val": order[test_size : test_size + val_size],
            "train": order[test_size + val_size :],
        }

    def _pixels(self, split: str) -> tuple[Tensor, Tensor, list[str]]:
        """One split decoded (once): uint8 images, labels and file paths."""
        if split not in self._decoded:
            if split == "test" and self.test_folder is not None:
                images, labels, paths, _ = decode_all(self.test_folder)
            else:
                images, labels, paths, _ = decode_all(self.train_folder, self.split_indices_by_name[split])
            self._decoded[split] = (images, labels, paths)
        return self._decoded[split]

    def fit_pixels(self) -> tuple[Pixels, Pixels]:
        train_images, train_labels, _ = self._pixels("train")
        if not self.has_validation:
            return (train_images, train_labels), (train_images[:0], train_labels[:0])
        val_images, val_labels, _ = self._pixels("val")
        return (train_images, train_labels), (val_images, val_labels)

    def test_pixels(self) -> tuple[Pixels, list[str]]:
        images, labels, paths = self._pixels("test")
        return (images, labels), paths

    def read_picture(self, path: Path) -> Tensor:
        return read_resized(path, self.channels, self.image_size)

    def default_normalization(self) -> tuple[ChannelValues, ChannelValues]:
        """The training images' own mean and standard deviation, per channel (one float each for gray images)."""
        if self._default_normalization is None:
            if self.streaming:
                histogram = torch.zeros(self.channels, 256, dtype=torch.long)
                for images, _ in self._stream_loader("train", self.eval_batch_size, shuffle=False):
                    histogram += pixel_histogram(images)
            else:
                histogram = pixel_histogram(self._pixels("train")[0])
            mean, std = histogram_statistics(histogram)
            self._default_normalization = (mean[0], std[0]) if self.channels == 1 else (mean, std)
        return self._default_normalization

    def recipe(self) -> dict[str, bool | int | float | str]:
        recipe = {"dataset": "ImageFolder", **super().recipe(), "image_size": self.image_size}
        if self.test_root is None:
            recipe["test_split"] = self.test_split
        return recipe

    # -- streaming ----------------------------------------------------------------------------------
    def _stream_dataset(self, split: str) -> Dataset:
        if split == "test" and self.test_folder is not None:
            return self.test_folder
        return Subset(self.train_folder, self.split_indices_by_name[split])

    def _stream_loader(self, split: str, batch_size: int, shuffle: bool, dataset: Dataset | None = None) -> DataLoader:
        return DataLoader(
            dataset or self._stream_dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def setup(self, stage: str) -> None:
        if not self.streaming or (stage == "predict" and self.predict_path is not None):
            super().setup(stage)
            return
        if stage == "validate":
            self.require_validation()
        if stage in ("test", "predict"):
            samples = self.test_folder.samples if self.test_folder is not None else None
            if samples is None:
                samples = [self.train_folder.samples[i] for i in self.split_indices_by_name["test"]]
            self.predict_names = [path for path, _ in samples]

    def train_dataloader(self) -> DataLoader:
        if not self.streaming:
            return super().train_dataloader()
        return self._stream_loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.streaming or not self.has_validation:
            return super().val_dataloader()
        return self._stream_loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if not self.streaming:
            return super().test_dataloader()
        return self._stream_loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if not self.streaming or self.predict_path is not None:
            return super().predict_dataloader()
        indexed = IndexedImages(self._stream_dataset("test"))
        return self._stream_loader("test", self.eval_batch_size, shuffle=False, dataset=indexed)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        if isinstance(batch, (tuple, list)) and batch[0].dtype == torch.uint8:
            # A streamed batch arrives as uint8 pixels (a quarter of the bytes to move): normalized on the device.
            batch = (normalize_(batch[0].float().div_(255), self.mean, self.std), batch[1])
        return super().on_after_batch_transfer(batch, dataloader_idx)
