"""The MNIST family as stored on disk: each dataset's torchvision class, file names, classes and normalization.

Everything that differs between MNIST, Fashion-MNIST, Kuzushiji-MNIST, EMNIST and QMNIST is in
``IdxDataset``; the data module reads them all through torchvision's own dataset classes.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

from torchvision.datasets import EMNIST, KMNIST, MNIST, QMNIST, FashionMNIST

DatasetName = Literal["MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST"]
EmnistSplit = Literal["balanced", "byclass", "bymerge", "letters", "digits", "mnist"]

# MNIST's default normalization: the mean and standard deviation of its 60k training images
# (0.13066, 0.30811), rounded as PyTorch's MNIST example writes them; tests/test_data.py checks
# them against the official files. The other datasets compute theirs from their training file
# (lightning_cnn/data/statistics.py): only MNIST's files exist where this was written.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

DIGITS = [str(digit) for digit in range(10)]
# EMNIST's class order, as in its mapping files: digits, upper-case, then lower-case letters;
# bymerge and balanced merge the 15 letters whose cases look alike into the upper-case class.
_MERGED = set("cijklmopsuvwxyz")
_EMNIST_CLASSES: dict[str, list[str]] = {
    "byclass": [*string.digits, *string.ascii_uppercase, *string.ascii_lowercase],
    "bymerge": [*string.digits, *string.ascii_uppercase, *(c for c in string.ascii_lowercase if c not in _MERGED)],
    "letters": list(string.ascii_lowercase),
    "digits": DIGITS,
    "mnist": DIGITS,
}
_EMNIST_CLASSES["balanced"] = _EMNIST_CLASSES["bymerge"]


@dataclass(frozen=True)
class IdxDataset:
    """One dataset of the MNIST family: where torchvision keeps it and what its labels mean.

    Attributes:
        name: the torchvision class name, also the folder ``<data_dir>/<name>/raw/``.
        description: how messages name it (``EMNIST letters``).
        torchvision_class: reads, downloads and MD5-checks the files.
        files: the extracted file names, ``{"train": (images, labels), "test": (images, labels)}``.
        downloads: the files (archives) to place in the raw folder for offline use.
        class_names: the name of each class, by label.
        first_label: the smallest label in the files (EMNIST letters count from 1; labels are shifted to 0).
        transposed: the images are stored transposed (EMNIST) and are turned upright when read.
        label_columns: 1 for plain label files; QMNIST's hold 8 values per image, the class first.
        mean, std: the default normalization, or None to compute it from the training file.
        picture_box: ``predict`` converts a picture the way the dataset was made: cropped to its ink,
            scaled to fit a box of this many pixels (20 for digits and letters, 28 for Fashion-MNIST's
            items, which fill their frame) and centred on a black 28x28 field.
    """

    name: str
    description: str
    torchvision_class: type[MNIST]
    files: dict[str, tuple[str, str]]
    downloads: tuple[str, ...]
    class_names: tuple[str, ...]
    first_label: int = 0
    transposed: bool = False
    label_columns: int = 1
    mean: float | None = None
    std: float | None = None
    picture_box: int = 20

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def torchvision_arguments(self) -> dict[str, str]:
        """The arguments beside ``root``, ``train`` and ``download`` that the torchvision class needs."""
        return {}


@dataclass(frozen=True)
class EmnistDataset(IdxDataset):
    split: str = "balanced"

    def torchvision_arguments(self) -> dict[str, str]:
        return {"split": self.split}


_MNIST_LAYOUT = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_DOWNLOADS = tuple(f"{name}.gz" for pair in _MNIST_LAYOUT.values() for name in pair)


def idx_dataset(name: str, emnist_split: str = "balanced") -> IdxDataset:
    """The description of dataset ``name`` (and, for EMNIST, of its split ``emnist_split``)."""
    if name == "EMNIST":
        prefix = f"emnist-{emnist_split}"
        return EmnistDataset(
            name="EMNIST",
            description=f"EMNIST {emnist_split}",
            torchvision_class=EMNIST,
            files={
                split: (f"{prefix}-{split}-images-idx3-ubyte", f"{prefix}-{split}-labels-idx1-ubyte")
                for split in ("train", "test")
            },
            downloads=("gzip.zip",),
            class_names=tuple(_EMNIST_CLASSES[emnist_split]),
            first_label=1 if emnist_split == "letters" else 0,
            transposed=True,
            split=emnist_split,
        )
    if name == "QMNIST":
        return IdxDataset(
            name="QMNIST",
            description="QMNIST",
            torchvision_class=QMNIST,
            files={
                split: (f"qmnist-{split}-images-idx3-ubyte", f"qmnist-{split}-labels-idx2-int")
                for split in ("train", "test")
            },
            downloads=tuple(
                f"qmnist-{split}-{kind}.gz"
                for split in ("train", "test")
                for kind in ("images-idx3-ubyte", "labels-idx2-int")
            ),
            class_names=tuple(DIGITS),
            label_columns=8,
        )
    classes = {
        "MNIST": (MNIST, DIGITS, "MNIST"),
        "FashionMNIST": (FashionMNIST, FashionMNIST.classes, "Fashion-MNIST"),
        "KMNIST": (KMNIST, KMNIST.classes, "Kuzushiji-MNIST"),
    }
    if name not in classes:
        raise ValueError(f"unknown dataset {name!r}; choose one of MNIST, FashionMNIST, KMNIST, EMNIST, QMNIST")
    torchvision_class, class_names, description = classes[name]
    return IdxDataset(
        name=name,
        description=description,
        torchvision_class=torchvision_class,
        files=_MNIST_LAYOUT,
        downloads=_MNIST_DOWNLOADS,
        class_names=tuple(class_names),
        mean=MNIST_MEAN if name == "MNIST" else None,
        std=MNIST_STD if name == "MNIST" else None,
        # Fashion-MNIST's items were scaled so that their longer side fills the 28 pixels (its README).
        picture_box=28 if name == "FashionMNIST" else 20,
    )
