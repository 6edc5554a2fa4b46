"""MNIST as a LightningDataModule: verified download, seeded split, and batches built from tensors.

The images are converted and normalized once, at setup, into one float tensor (on the
accelerator when training on one); a batch is gathered by index, and training batches are
augmented as a whole in ``on_after_batch_transfer``. No per-sample PIL image or Python transform
runs on the hot path, and no per-batch conversion either.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse.typing import (
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
)
from torch import Tensor
from torchvision.datasets import MNIST

from lightning_cnn.data.augmentation import Augmentation
from lightning_cnn.data.base import ImageDataModule
from lightning_cnn.data.files import MNIST_FILES, OFFICIAL_EXTRACTED, damaged_raw_files
from lightning_cnn.data.images import SUPPORTED_FORMATS, ImageReadError, find_images, load_image
from lightning_cnn.data.loader import TensorBatchLoader
from lightning_cnn.errors import DataError


class MNISTDataModule(ImageDataModule):
    """The MNIST digits: 60k training images split into train/val, and the official 10k test set.

    Args:
        data_dir: root folder; the dataset lives in ``<data_dir>/MNIST/raw``.
        batch_size: training batch size per device.
        eval_batch_size: batch size for validation, test and predict (per device).
        val_split: validation size taken from the 60k training images, as a count or a fraction; 0
            trains on all of them without validation (checkpoints: ``last.ckpt`` only).
        split_seed: seed of the train/val split; the split never depends on the global seed.
        mean: normalization mean, on the [0, 1] pixel scale.
        std: normalization standard deviation, on the [0, 1] pixel scale.
        augmentation: random affine augmentation of training batches; ``null`` turns it off.
        download: fetch missing files from the official mirrors (MD5-verified).
        predict_path: images to ``predict`` instead of the MNIST test set: an image file (PNG, JPEG, BMP,
            GIF, WebP, TIFF), a folder of them or a glob; each is converted the way MNIST digits were made.
    """

    num_classes = 10
    image_shape = (1, 28, 28)

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        val_split: NonNegativeInt | OpenUnitInterval = 5000,
        split_seed: int = 42,
        mean: float = 0.1307,
        std: PositiveFloat = 0.3081,
        augmentation: Augmentation | None = None,
        download: bool = True,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_split, self.split_seed = val_split, split_seed
        self.mean, self.std = mean, std
        self.augmentation = augmentation
        self.download = download
        self.predict_path = predict_path
        self.predict_pixels: Tensor | None = None  # uint8, as read from the files
        self.predict_images: Tensor | None = None  # normalized, as the model sees them
        self.shuffle_seed = 0
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self.test_images = self.test_labels = None

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def _predicting_files(self) -> bool:
        return self.predict_path is not None and self.trainer is not None and self.trainer.predicting

    def check_raw_files(self) -> None:
        """Raise a DataError naming any damaged extracted MNIST file, before anything parses it."""
        damaged = damaged_raw_files(self.raw_dir)
        if damaged:
            details = "; ".join(
                dict.fromkeys(why if why.startswith(name) else f"{name}: {why}" for name, why in damaged.items())
            )
            raise DataError(
                f"damaged or mismatched MNIST files in {self.raw_dir} ({details}); delete them and run with "
                "data.download=true "
                "(they are extracted again from the verified .gz archives, or downloaded), or copy good copies there"
            )

    def prepare_data(self) -> None:
        if self._predicting_files():
            return  # the user's images replace the test set; MNIST is not needed
        blocking = next((p for p in (self.data_dir, self.data_dir / "MNIST", self.raw_dir) if p.is_file()), None)
        if blocking is not None:
            raise DataError(
                f"data.data_dir={self.data_dir}: {blocking} is a file, where the dataset needs a folder "
                f"(<data_dir>/MNIST/raw/); set data.data_dir to a folder"
            )
        if self.download:
            # Damaged extracted files are deleted so torchvision extracts them again from the .gz
            # archives, which it verifies by MD5 (downloading them afresh when they are damaged too).
            for name in damaged_raw_files(self.raw_dir):
                (self.raw_dir / name).unlink()
        else:
            # Checked here too (prepare_data runs before any run folder exists), so a missing or
            # damaged dataset leaves nothing behind.
            if not all((self.raw_dir / name).is_file() for name in OFFICIAL_EXTRACTED):
                raise DataError(
                    f"MNIST is not in {self.raw_dir}; set data.download=true, or copy the four official "
                    f"files {', '.join(MNIST_FILES)} there and run once with data.download=true to extract them"
                )
            self.check_raw_files()
            return
        for train in (True, False):
            try:
                MNIST(self.data_dir, train=train, download=True)
            except (RuntimeError, OSError) as error:
                # torchvision's message lists every mirror tried, over several lines: keep the last reason.
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                reasons = [line for line in lines[1:] if not line.startswith("Tried ")] or lines[:1]
                reason = reasons[-1] if reasons else type(error).__name__
                names = ", ".join(MNIST_FILES)
                raise DataError(
                    f"could not download MNIST into {self.raw_dir} ({reason}); without network access, "
                    f"copy the four official files {names} into {self.raw_dir}/ and run again"
                ) from None

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        self.check_raw_files()
        try:
            dataset = MNIST(self.data_dir, train=train, download=False)
        except RuntimeError:
            raise DataError(
                f"MNIST is not in {self.raw_dir}; set data.download=true, or copy the four official "
                f"files {', '.join(MNIST_FILES)} there"
            ) from None
        except (ValueError, AssertionError, OSError) as error:
            # Whatever the header and checksum checks could not see (a file of another dataset, say).
            raise DataError(
                f"MNIST files in {self.raw_dir} cannot be parsed ({error}); delete them and run with "
                "data.download=true, or copy the four official files there"
            ) from None
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets

    @property
    def has_validation(self) -> bool:
        """False when ``val_split`` is 0: training uses all the training images and nothing is validated."""
        return self.val_split != 0

    def check_inputs(self, stage: str) -> None:
        if stage == "validate":
            self.require_validation()
        if stage == "predict" and self.predict_path is not None:
            self.read_predict_images()

    def recipe(self) -> dict[str, bool | int | float | str]:
        # val_split 0: trained on every training image, not validated.
        return {
            "batch_size": self.batch_size,
            "augmentation": self.augmentation is not None,
            "val_split": self.val_split,
        }

    def require_validation(self) -> None:
        """Raise a DataError when ``val_split`` is 0 and there is nothing to validate."""
        if not self.has_validation:
            raise DataError(
                "data.val_split=0 holds out no validation images, so there is nothing to validate; "
                "set data.val_split (a count such as 5000, or a fraction), or use 'test'"
            )

    def split_indices(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """Train and validation indices into the training set, drawn from ``split_seed`` alone."""
        if not self.has_validation:
            return torch.arange(num_samples), torch.arange(0)
        is_fraction = isinstance(self.val_split, float)
        val_size = round(self.val_split * num_samples) if is_fraction else self.val_split
        if not 0 < val_size < num_samples:
            raise DataError(
                f"data.val_split={self.val_split} leaves no training or no validation images out of "
                f"{num_samples}; choose a count below {num_samples} or a fraction in (0, 1) (0: no validation)"
            )
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(self.split_seed))
        return order[val_size:], order[:val_size]

    def setup(self, stage: str) -> None:
        device = torch.device("cpu")
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            # One shuffling seed for every rank, derived from the global seed (seed_everything).
            self.shuffle_seed = int(self.trainer.strategy.broadcast(torch.initial_seed() % 2**31))
        if stage == "validate":
            self.require_validation()
        if stage in ("fit", "validate") and self.train_images is None:
            images, labels = self._load(train=True)
            train_index, val_index = self.split_indices(len(labels))
            self.train_images = self.to_model_input(images[train_index], device)
            self.val_images = self.to_model_input(images[val_index], device)
            self.train_labels, self.val_labels = labels[train_index].to(device), labels[val_index].to(device)
        if stage == "predict" and self.predict_path is not None:
            self.predict_images = self.to_model_input(self.read_predict_images(), device)
        elif stage in ("test", "predict") and self.test_images is None:
            images, labels = self._load(train=False)
            self.test_images, self.test_labels = self.to_model_input(images, device), labels.to(device)
            self.predict_names = [f"{self.raw_dir / 't10k-images-idx3-ubyte'}[{i}]" for i in range(len(labels))]

    def find_predict_files(self) -> list[Path]:
        """The files ``predict_path`` names (raises a DataError when it names none)."""
        return find_images(self.predict_path)

    def read_predict_images(self) -> Tensor:
        """The images at ``predict_path`` as uint8 (N, 1, 28, 28), read once; unreadable files are listed and skipped.

        Raises:
            DataError: no file could be read (or none is named).
        """
        if self.predict_pixels is not None:
            return self.predict_pixels
        # Decoding files is per-image Python by nature; it runs once, before prediction starts.
        images, self.predict_names, self.predict_failures = [], [], []
        for path in self.find_predict_files():
            try:
                images.append(load_image(path))
                self.predict_names.append(str(path))
            except ImageReadError as error:
                self.predict_failures.append(str(error))
                if self.trainer is None or self.trainer.is_global_zero:
                    print(f"skipped: {error}", file=sys.stderr)
        if not images:
            raise DataError(
                f"none of the {len(self.predict_failures)} files at {self.predict_path} could be read "
                f"(see the lines above); point data.predict_path at {SUPPORTED_FORMATS} pictures of digits"
            )
        self.predict_pixels = torch.stack(images)
        return self.predict_pixels

    def _loader(self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool = False) -> TensorBatchLoader:
        rank, world_size = 0, 1
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        return TensorBatchLoader(images, labels, batch_size, shuffle, self.shuffle_seed, rank, world_size)

    def train_dataloader(self) -> TensorBatchLoader:
        loader = self._loader(self.train_images, self.train_labels, self.batch_size, shuffle=True)
        loader.resume_batches = self._batches_already_trained
        return loader

    def _batches_already_trained(self) -> int:
        """Batches of the current epoch trained before the checkpoint that fit resumes from (0 otherwise).

        A checkpoint saved inside an epoch (SIGINT/SIGTERM, every_n_train_steps) records Lightning's
        batch progress; the epoch's order is reproducible from the seed, so those batches are skipped.
        """
        if self.trainer is None:
            return 0
        epoch_loop = self.trainer.fit_loop.epoch_loop
        return epoch_loop.batch_progress.current.processed if epoch_loop.restarting else 0

    def val_dataloader(self) -> TensorBatchLoader | list:
        if not self.has_validation:
            return []  # Lightning skips validation (and its sanity check) for an empty list
        return self._loader(self.val_images, self.val_labels, self.eval_batch_size)

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.test_images, self.test_labels, self.eval_batch_size)

    def predict_dataloader(self) -> TensorBatchLoader:
        # Batches are (images, index into predict_names), so a prediction writer can name each row.
        images = self.test_images if self.predict_path is None else self.predict_images
        return self._loader(images, torch.arange(len(images), device=images.device), self.eval_batch_size)

    def to_model_input(self, pixels: Tensor, device: torch.device | str = "cpu") -> Tensor:
        """uint8 pixels -> float images as the network sees them: ``ToTensor`` then ``Normalize``, on ``device``.

        Done once per dataset at setup (the uint8 tensor travels to the device, four times smaller),
        so that a training step pays for the gather of its batch and nothing more.
        """
        # In place after the one conversion: a float copy of the training set is 170 MB.
        return pixels.to(device).float().div_(255).sub_(self.mean).div_(self.std)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        # Runs on the device, once per batch. Only training batches change: they are augmented.
        augment = self.augmentation is not None and self.trainer is not None and self.trainer.training
        if not augment or not isinstance(batch, (tuple, list)):
            return batch  # also anything that is not one of this module's batches (the summary's example input)
        images, labels = batch
        # The augmentation pads with zeros, and a black pixel is normalized to -mean/std: shifted so
        # that black is zero, the batch is augmented exactly as its [0, 1] pixels would be.
        black = -self.mean / self.std
        return self.augmentation(images - black).add_(black), labels
