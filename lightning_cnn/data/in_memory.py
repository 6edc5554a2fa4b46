"""The fast path shared by the data modules whose images fit in memory: decoded once, batches gathered by index.

The images are converted and normalized once, at setup, into one float tensor per split (on the
accelerator when training on one); a batch is gathered by index, and training batches are
augmented as a whole in ``on_after_batch_transfer``. No per-sample PIL image or Python transform
runs on the hot path, and no per-batch conversion either. A subclass says where the pixels come
from (``fit_pixels``, ``test_pixels``), how a user's picture is read (``read_picture``) and what
the default normalization is (``default_normalization``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor

from lightning_cnn.data.augmentation import Augmentation
from lightning_cnn.data.base import ChannelValues, ImageDataModule, per_channel
from lightning_cnn.data.images import SUPPORTED_FORMATS, ImageReadError, find_images
from lightning_cnn.data.loader import TensorBatchLoader
from lightning_cnn.data.splits import HeldOutSize
from lightning_cnn.errors import DataError

# (uint8 images (N, C, H, W), labels (N,))
Pixels = tuple[Tensor, Tensor]


def normalize_(images: Tensor, mean: ChannelValues, std: ChannelValues) -> Tensor:
    """``(images - mean) / std`` in place, with one value for every channel or one per channel."""
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
        return images.sub_(mean).div_(std)
    return images.sub_(per_channel(mean, images)).div_(per_channel(std, images))


class InMemoryImageDataModule(ImageDataModule):
    """A dataset held as tensors: seeded validation split, normalization, augmentation, predict on files.

    Subclasses call ``super().__init__`` with the shared options and implement the loading hooks.
    """

    # How error messages name the pictures ``predict_path`` should point at.
    picture_kind = "pictures"

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int,
        val_split: HeldOutSize,
        split_seed: int,
        mean: ChannelValues | None,
        std: ChannelValues | None,
        augmentation: Augmentation | None,
        predict_path: str | None,
    ) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_split, self.split_seed = val_split, split_seed
        self.configured_mean, self.configured_std = mean, std
        self.augmentation = augmentation
        self.predict_path = predict_path
        self.predict_pixels: Tensor | None = None  # uint8, as read from the files
        self.predict_images: Tensor | None = None  # normalized, as the model sees them
        self.shuffle_seed = 0
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self.test_images = self.test_labels = None

    # -- what a subclass provides -------------------------------------------------------------------
    def fit_pixels(self) -> tuple[Pixels, Pixels]:
        """The training and validation images and labels (uint8 images)."""
        raise NotImplementedError

    def test_pixels(self) -> tuple[Pixels, list[str]]:
        """The test images and labels, and a name for each image (the predictions CSV's path column)."""
        raise NotImplementedError

    def read_picture(self, path: Path) -> Tensor:
        """One user's picture as uint8 ``image_shape``, prepared as the training images were (ImageReadError if not)."""
        raise NotImplementedError

    def default_normalization(self) -> tuple[ChannelValues, ChannelValues]:
        """The mean and std used when the config gives none."""
        raise NotImplementedError

    # -- normalization ------------------------------------------------------------------------------
    @property
    def mean(self) -> ChannelValues:
        """The configured mean, else the dataset's default (see ``default_normalization``)."""
        return self.configured_mean if self.configured_mean is not None else self.default_normalization()[0]

    @property
    def std(self) -> ChannelValues:
        """The configured standard deviation, else the dataset's default."""
        return self.configured_std if self.configured_std is not None else self.default_normalization()[1]

    def to_model_input(self, pixels: Tensor, device: torch.device | str = "cpu") -> Tensor:
        """uint8 pixels -> float images as the network sees them: ``ToTensor`` then ``Normalize``, on ``device``.

        Done once per dataset at setup (the uint8 tensor travels to the device, four times smaller),
        so that a training step pays for the gather of its batch and nothing more.
        """
        # In place after the one conversion: a float copy of MNIST's training set is 170 MB.
        return normalize_(pixels.to(device).float().div_(255), self.mean, self.std)

    # -- splits -------------------------------------------------------------------------------------
    @property
    def has_validation(self) -> bool:
        """False when ``val_split`` is 0: training uses all the training images and nothing is validated."""
        return self.val_split != 0

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
        val_size = held_out_size(self.val_split, num_samples, "val_split", "validation", "(0: no validation)")
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(self.split_seed))
        return order[val_size:], order[:val_size]

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

    def setup(self, stage: str) -> None:
        device = torch.device("cpu")
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            # One shuffling seed for every rank, derived from the global seed (seed_everything).
            self.shuffle_seed = int(self.trainer.strategy.broadcast(torch.initial_seed() % 2**31))
        if stage == "validate":
            self.require_validation()
        if stage in ("fit", "validate") and self.train_images is None:
            (train_pixels, self.train_labels), (val_pixels, self.val_labels) = self.fit_pixels()
            self.train_images = self.to_model_input(train_pixels, device)
            self.val_images = self.to_model_input(val_pixels, device)
            self.train_labels, self.val_labels = self.train_labels.to(device), self.val_labels.to(device)
        if stage == "predict" and self.predict_path is not None:
            self.predict_images = self.to_model_input(self.read_predict_images(), device)
        elif stage in ("test", "predict") and self.test_images is None:
            (pixels, labels), names = self.test_pixels()
            self.test_images, self.test_labels = self.to_model_input(pixels, device), labels.to(device)
            self.predict_names = names

    # -- predicting the user's files ----------------------------------------------------------------
    def predicting_files(self) -> bool:
        """Whether this command predicts the files at ``predict_path`` (the dataset itself is then not needed)."""
        return self.predict_path is not None and self.trainer is not None and self.trainer.predicting

    def find_predict_files(self) -> list[Path]:
        """The files ``predict_path`` names (raises a DataError when it names none)."""
        return find_images(self.predict_path)

    def read_predict_images(self) -> Tensor:
        """The images at ``predict_path`` as uint8 ``(N, *image_shape)``, read once; unreadable files are skipped.

        Raises:
            DataError: no file could be read (or none is named).
        """
        if self.predict_pixels is not None:
            return self.predict_pixels
        # Decoding files is per-image Python by nature; it runs once, before prediction starts.
        images, self.predict_names, self.predict_failures = [], [], []
        for path in self.find_predict_files():
            try:
                images.append(self.read_picture(path))
                self.predict_names.append(str(path))
            except ImageReadError as error:
                self.predict_failures.append(str(error))
                if self.trainer is None or self.trainer.is_global_zero:
                    print(f"skipped: {error}", file=sys.stderr)
        if not images:
            raise DataError(
                f"none of the {len(self.predict_failures)} files at {self.predict_path} could be read "
                f"(see the lines above); point data.predict_path at {SUPPORTED_FORMATS} {self.picture_kind}"
            )
        self.predict_pixels = torch.stack(images)
        return self.predict_pixels

    # -- loaders ------------------------------------------------------------------------------------
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

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        # Runs on the device, once per batch. Only training batches change: they are augmented.
        augment = self.augmentation is not None and self.trainer is not None and self.trainer.training
        if not augment or not isinstance(batch, (tuple, list)):
            return batch  # also anything that is not one of this module's batches (the summary's example input)
        images, labels = batch
        # The augmentation pads with zeros, and a black pixel is normalized to -mean/std: shifted so
        # that black is zero, the batch is augmented exactly as its [0, 1] pixels would be.
        mean, std = self.mean, self.std
        if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
            black = -mean / std
        else:
            black = normalize_(torch.zeros(1, images.shape[1], 1, 1, device=images.device), mean, std)
        return self.augmentation(images - black).add_(black), labels


def held_out_size(split: int | float, num_samples: int, option: str, held_out: str, zero_means: str) -> int:
    """How many of ``num_samples`` images a count or fraction ``split`` holds out (a DataError if none are left)."""
    size = round(split * num_samples) if isinstance(split, float) else split
    if not 0 < size < num_samples:
        raise DataError(
            f"data.{option}={split} leaves no training or no {held_out} images out of {num_samples}; "
            f"choose a count below {num_samples} or a fraction in (0, 1) {zero_means}"
        )
    return size
