"""MNIST as a LightningDataModule: verified download, seeded split, and batches built from tensors.

The images are converted and normalized once, at setup, into one float tensor (on the
accelerator when training on one); a batch is gathered by index, and training batches are
augmented as a whole in ``on_after_batch_transfer``. No per-sample PIL image or Python transform
runs on the hot path, and no per-batch conversion either.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
)
from torch import Tensor
from torchvision.datasets import MNIST

from lightning_cnn.errors import DataError
from lightning_cnn.images import ImageReadError, find_images, load_image

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Size and MD5 of the official uncompressed files. torchvision checks the .gz archives when it
# downloads or extracts them, but trusts any extracted file that exists: a truncated or damaged one
# would fail deep inside its parser, or load silently. These catch it before parsing.
OFFICIAL_EXTRACTED = {
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637"),
}


@functools.lru_cache(maxsize=16)
def _md5(path: Path, size: int, mtime_ns: int) -> str:
    # Keyed by size and modification time, so prepare_data and setup hash each file once per process.
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def idx_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole IDX file of unsigned bytes (its size must match its header), or None."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        magic = file.read(4)
        if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or not 1 <= magic[3] <= 4:
            return "it is not an IDX file of unsigned bytes"
        dims = file.read(4 * magic[3])
    if len(dims) < 4 * magic[3]:
        return "it is truncated inside its header"
    expected = 4 + len(dims) + math.prod(struct.unpack(f">{magic[3]}I", dims))
    if size != expected:
        return f"it holds {size} bytes where its header promises {expected} (truncated or damaged)"
    return None


def idx_shape(path: Path) -> tuple[int, ...]:
    """The array shape in the header of an IDX file (call only on a file that ``idx_file_problem`` passes)."""
    with open(path, "rb") as file:
        ndim = file.read(4)[3]
        return struct.unpack(f">{ndim}I", file.read(4 * ndim))


def split_mismatch(images: Path, labels: Path, image_size: tuple[int, int]) -> str | None:
    """Why an images file and its labels file cannot be one split (wrong shapes, or counts that differ), or None."""
    images_shape, labels_shape = idx_shape(images), idx_shape(labels)
    if len(images_shape) != 3 or tuple(images_shape[1:]) != image_size:
        return (
            f"{images.name} holds an array of shape {images_shape} where images of "
            f"{image_size[0]}x{image_size[1]} pixels are expected (is it a labels file?)"
        )
    if len(labels_shape) != 1:
        return f"{labels.name} holds an array of shape {labels_shape} where one label per image is expected"
    if images_shape[0] != labels_shape[0]:
        return f"{images.name} holds {images_shape[0]} images but {labels.name} holds {labels_shape[0]} labels"
    return None


def damaged_raw_files(raw_dir: Path) -> dict[str, str]:
    """The extracted MNIST files in ``raw_dir`` that are damaged, each with the reason; empty when all are sound.

    Every file gets the cheap size-against-header check; a file with the official size must also have
    the official MD5 (files of other sizes, such as small test datasets, are not official ones). The
    images and labels of each split must then agree: image shape, one label per image. This reads
    headers only, so it runs before anything is parsed or written.
    """
    problems = {}
    for name, (official_size, official_md5) in OFFICIAL_EXTRACTED.items():
        path = raw_dir / name
        if not path.is_file():
            continue
        problem = idx_file_problem(path)
        stat = path.stat()
        official_size_wrong_md5 = (
            stat.st_size == official_size and _md5(path, stat.st_size, stat.st_mtime_ns) != official_md5
        )
        if problem is None and official_size_wrong_md5:
            problem = "its MD5 checksum does not match the official file"
        if problem is not None:
            problems[name] = problem
    for split in ("train", "t10k"):
        images, labels = raw_dir / f"{split}-images-idx3-ubyte", raw_dir / f"{split}-labels-idx1-ubyte"
        if images.is_file() and labels.is_file() and images.name not in problems and labels.name not in problems:
            mismatch = split_mismatch(images, labels, MNISTDataModule.image_shape[1:])
            if mismatch is not None:
                problems[images.name] = problems[labels.name] = mismatch
    return problems


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
    ``shuffle=True`` the order of epoch ``e`` is a permutation drawn from the pair ``(seed, e)``,
    identical on every rank and shared with no other pair; Lightning calls :meth:`set_epoch`
    (through ``.sampler``) before each epoch.

    ``resume_batches``, when given, is asked at the start of every iteration how many batches of the
    current epoch were already trained on (non-zero only when fit resumes inside an epoch); those
    are skipped. It is asked then, not when the loader is built, because Lightning may build the
    loader before it restores the checkpoint (``trainer.estimated_stepping_batches`` does).
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
        resume_batches: Callable[[], int] | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resume_batches = resume_batches
        # Lightning calls ``sampler.set_epoch`` on any iterable that has one, and inspects ``batch_sampler``.
        self.sampler, self.batch_sampler = self, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        # Lightning saves this in checkpoints and treats the loader as resumable. The position inside
        # the epoch is Lightning's own batch progress (see MNISTDataModule.train_dataloader), since
        # the loader cannot tell the batches trained on from the one Lightning has prefetched.
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]

    def _num_batches(self) -> int:
        largest_shard = math.ceil(len(self.labels) / self.world_size)
        return math.ceil(largest_shard / self.batch_size)

    def __len__(self) -> int:
        return self._num_batches()

    def shard_indices(self) -> Tensor:
        """The indices this rank visits in the current epoch, in order."""
        n = len(self.labels)
        if self.shuffle:
            # Hashed through a SeedSequence: with seed + epoch, run s would replay run s+1's orders one epoch late.
            pair_seed = int(np.random.SeedSequence((self.seed, self.epoch)).generate_state(1, np.uint64)[0])
            generator = torch.Generator().manual_seed(pair_seed)
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
        # Read here, at the first batch of the epoch, when Lightning has restored its progress.
        start = self.resume_batches() if self.resume_batches is not None else 0
        for index in batches[start if 0 < start < len(batches) else 0 :]:
            # index_select gathers the same rows as images[index], about five times faster on a CPU.
            yield self.images.index_select(0, index), self.labels.index_select(0, index)


class ImageDataModule(pl.LightningDataModule):
    """What the model, the callbacks and the CLI need from a dataset of labelled images.

    Subclass it for a new dataset and choose it with ``data.class_path``; nothing else in the
    package needs to change. Batches are ``(images, labels)``, images normalized as the network
    sees them; predict batches are ``(images, row indices into predict_names)``.

    Attributes:
        num_classes: number of classes (linked to ``model.num_classes``).
        image_shape: ``(channels, height, width)`` of one image (linked to ``model.input_shape``).
        batch_size: training batch size per device.
        mean, std: the normalization, on the [0, 1] pixel scale: the network sees ``(pixels / 255 - mean) / std``.
        predict_names: one name per predicted row (a file path, or a dataset index), set by ``setup("predict")``.
        predict_failures: the input files that could not be read and were skipped.
    """

    num_classes: int = 10
    image_shape: tuple[int, int, int] = (1, 28, 28)
    batch_size: int = 64
    mean: float = 0.0
    std: float = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.predict_names: list[str] = []
        self.predict_failures: list[str] = []

    @property
    def class_names(self) -> list[str]:
        """The name of each class, by label (axes, captions, CSV columns); the label numbers by default."""
        return [str(label) for label in range(self.num_classes)]

    @property
    def has_validation(self) -> bool:
        """False when no validation images are held out (nothing is validated; checkpoints: last only)."""
        return True

    def denormalize(self, images: Tensor) -> Tensor:
        """Images as the network sees them, back on the [0, 1] pixel scale for display."""
        return (images.detach().float() * self.std + self.mean).clamp(0, 1)

    def check_inputs(self, stage: str) -> None:
        """Raise a DataError for data that cannot serve ``stage``, before any run folder exists (cheap checks only)."""

    def recipe(self) -> dict[str, bool | int | float | str]:
        """The data side of the run's recipe, as flat values for the hparams tab and the run record."""
        return {"batch_size": self.batch_size}


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
        predict_path: images to ``predict`` instead of the MNIST test set: a PNG/JPEG/BMP file, a
            folder of them or a glob; each is converted the way MNIST digits were made.
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
                "(see the lines above); point data.predict_path at PNG, JPEG or BMP pictures of digits"
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
