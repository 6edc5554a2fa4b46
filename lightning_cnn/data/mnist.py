"""The MNIST family as a LightningDataModule: MNIST, Fashion-MNIST, Kuzushiji-MNIST, EMNIST and QMNIST.

torchvision's own dataset classes download and MD5-check the archives and parse the files; this
module checks the extracted files before they are parsed (headers, counts, label range), turns
EMNIST's transposed images upright, shifts EMNIST letters' labels to start at 0, and holds every
split as tensors for the fast path (``InMemoryImageDataModule``).
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse.typing import PositiveFloat, PositiveInt
from torch import Tensor

from lightning_cnn.data.augmentation import Augmentation
from lightning_cnn.data.datasets import DatasetName, EmnistSplit, idx_dataset
from lightning_cnn.data.files import damaged_raw_files
from lightning_cnn.data.images import load_image
from lightning_cnn.data.in_memory import InMemoryImageDataModule, Pixels
from lightning_cnn.data.splits import HeldOutSize
from lightning_cnn.data.statistics import cached_statistics, pixel_statistics
from lightning_cnn.errors import DataError


class MNISTDataModule(InMemoryImageDataModule):
    """A dataset of the MNIST family (MNIST by default): its training images split into train/val, and its test set.

    Args:
        data_dir: root folder; a dataset lives in ``<data_dir>/<dataset>/raw`` (``data/MNIST/raw``).
        batch_size: training batch size per device.
        eval_batch_size: batch size for validation, test and predict (per device).
        val_split: validation size taken from the training images, as a count or a fraction; 0
            trains on all of them without validation (checkpoints: ``last.ckpt`` only).
        split_seed: seed of the train/val split; the split never depends on the global seed.
        mean: normalization mean, on the [0, 1] pixel scale; null: the dataset's own (MNIST: 0.1307;
            the others: computed from their training file once, and cached beside it).
        std: normalization standard deviation, on the [0, 1] pixel scale; null: the dataset's own (MNIST: 0.3081).
        augmentation: random affine augmentation of training batches; ``null`` turns it off.
        download: fetch missing files from the official mirrors (MD5-verified).
        predict_path: images to ``predict`` instead of the test set: an image file (PNG, JPEG, BMP,
            GIF, WebP, TIFF), a folder of them or a glob; each is converted the way the dataset's images were made.
        dataset: MNIST, FashionMNIST, KMNIST, EMNIST or QMNIST, read through torchvision's class of that name.
        emnist_split: which EMNIST split (``dataset: EMNIST`` only): balanced (47 classes), byclass (62),
            bymerge (47), letters (26), digits (10) or mnist (10).
    """

    image_shape = (1, 28, 28)
    picture_kind = "pictures of digits"

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        val_split: HeldOutSize = 5000,
        split_seed: int = 42,
        mean: float | None = None,
        std: PositiveFloat | None = None,
        augmentation: Augmentation | None = None,
        download: bool = True,
        predict_path: str | None = None,
        dataset: DatasetName = "MNIST",
        emnist_split: EmnistSplit = "balanced",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, val_split, split_seed, mean, std, augmentation, predict_path)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.download = download
        self.dataset = idx_dataset(dataset, emnist_split)
        self.num_classes = self.dataset.num_classes
        self._default_normalization: tuple[float, float] | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset.class_names)

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.dataset.name / "raw"

    def _files(self) -> list[str]:
        return [name for pair in self.dataset.files.values() for name in pair]

    def _not_found(self, then: str) -> DataError:
        spec = self.dataset
        downloads = ", ".join(spec.downloads)
        extracted = ", ".join(self._files())
        official = "the four official files" if len(spec.downloads) == 4 else "the official file"
        return DataError(
            f"{spec.description} is not in {self.raw_dir}; set data.download=true, or copy {official} "
            f"{downloads} there{then} (or the extracted files {extracted})"
        )

    def check_raw_files(self) -> None:
        """Raise a DataError naming any damaged or mismatched extracted file, before anything parses it."""
        damaged = damaged_raw_files(self.raw_dir, self.dataset)
        if damaged:
            # Each reason once (the two files of a mismatched split share theirs), prefixed by the files it is about
            # unless it names them itself.
            files_by_reason: dict[str, list[str]] = {}
            for name, why in damaged.items():
                files_by_reason.setdefault(why, []).append(name)
            details = "; ".join(
                why if any(name in why for name in names) else f"{', '.join(names)}: {why}"
                for why, names in files_by_reason.items()
            )
            raise DataError(
                f"damaged or mismatched {self.dataset.description} files in {self.raw_dir} ({details}); delete them "
                "and run with data.download=true (they are extracted again from the verified archives, or "
                "downloaded), or copy good copies there"
            )

    def _torchvision_dataset(self, train: bool, download: bool):  # noqa: ANN202 (a torchvision MNIST subclass)
        spec = self.dataset
        return spec.torchvision_class(self.data_dir, train=train, download=download, **spec.torchvision_arguments())

    def prepare_data(self) -> None:
        if self.predicting_files():
            return  # the user's images replace the test set; the dataset is not needed
        name = self.dataset.name
        blocking = next((p for p in (self.data_dir, self.data_dir / name, self.raw_dir) if p.is_file()), None)
        if blocking is not None:
            raise DataError(
                f"data.data_dir={self.data_dir}: {blocking} is a file, where the dataset needs a folder "
                f"(<data_dir>/{name}/raw/); set data.data_dir to a folder"
            )
        if self.download:
            # Damaged extracted files are deleted so torchvision extracts them again from the archives,
            # which it verifies by MD5 (downloading them afresh when they are damaged too).
            for damaged in damaged_raw_files(self.raw_dir, self.dataset):
                (self.raw_dir / damaged).unlink()
        else:
            # Checked here too (prepare_data runs before any run folder exists), so a missing or
            # damaged dataset leaves nothing behind.
            if not all((self.raw_dir / file).is_file() for file in self._files()):
                raise self._not_found(" and run once with data.download=true to extract them")
            self.check_raw_files()
            return
        for train in (True, False):
            try:
                self._torchvision_dataset(train, download=True)
            except (RuntimeError, OSError) as error:
                # torchvision's message lists every mirror tried, over several lines: keep the last reason.
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                reasons = [line for line in lines[1:] if not line.startswith("Tried ")] or lines[:1]
                reason = reasons[-1] if reasons else type(error).__name__
                raise DataError(
                    f"could not download {self.dataset.description} into {self.raw_dir} ({reason}); without "
                    f"network access, copy {', '.join(self.dataset.downloads)} into {self.raw_dir}/ and run again"
                ) from None

    def load(self, train: bool) -> Pixels:
        """The training or test split as uint8 images ``(N, 1, 28, 28)``, upright, and labels from 0."""
        self.check_raw_files()
        try:
            dataset = self._torchvision_dataset(train, download=False)
        except RuntimeError:
            raise self._not_found("") from None
        except (ValueError, AssertionError, TypeError, OSError) as error:
            # Whatever the header and checksum checks could not see.
            raise DataError(
                f"{self.dataset.description} files in {self.raw_dir} cannot be parsed ({error}); delete them and "
                "run with data.download=true, or copy the official files there"
            ) from None
        images, labels = dataset.data, dataset.targets
        if self.dataset.transposed:
            images = images.transpose(1, 2)  # EMNIST stores each image transposed
        if labels.dim() == 2:
            labels = labels[:, 0]  # QMNIST: the class, then the writer and other details
        return images.unsqueeze(1).contiguous(), labels.long() - self.dataset.first_label

    def fit_pixels(self) -> tuple[Pixels, Pixels]:
        images, labels = self.load(train=True)
        train_index, val_index = self.split_indices(len(labels))
        return (images[train_index], labels[train_index]), (images[val_index], labels[val_index])

    def test_pixels(self) -> tuple[Pixels, list[str]]:
        images, labels = self.load(train=False)
        test_images_file = self.raw_dir / self.dataset.files["test"][0]
        return (images, labels), [f"{test_images_file}[{i}]" for i in range(len(labels))]

    def read_picture(self, path: Path) -> Tensor:
        return load_image(path, box=self.dataset.picture_box)

    def default_normalization(self) -> tuple[float, float]:
        """MNIST's constants; for the others, the statistics of the whole training file, computed once and cached
        in ``<data_dir>/<dataset>/normalization.json``."""
        if self.dataset.mean is not None and self.dataset.std is not None:
            return self.dataset.mean, self.dataset.std
        if self._default_normalization is None:
            source = self.raw_dir / self.dataset.files["train"][0]
            if not source.is_file():
                raise DataError(
                    f"data.mean and data.std of {self.dataset.description} are computed from its training images, "
                    f"but {source} does not exist; set data.mean and data.std, or put the training files in place"
                )
            cache = self.data_dir / self.dataset.name / "normalization.json"
            mean, std = cached_statistics(cache, source, lambda: pixel_statistics(self.load(train=True)[0]))
            self._default_normalization = (mean[0], std[0])
        return self._default_normalization

    def recipe(self) -> dict[str, bool | int | float | str]:
        recipe = {"dataset": self.dataset.name, **super().recipe()}
        if self.dataset.name == "EMNIST":
            recipe["emnist_split"] = self.dataset.split
        return recipe
