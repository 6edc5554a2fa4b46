"""The MNIST family's files on disk: official sizes and checksums, and header and label checks that run before parsing.

torchvision checks the downloaded archives by MD5 but trusts any extracted file that exists: a
truncated or damaged one, or the files of another dataset under this one's names, would fail deep
inside its parser or load silently. These checks read headers (and the small label files) only.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from pathlib import Path

import numpy as np

from lightning_cnn.data.datasets import IdxDataset, idx_dataset

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Size and MD5 of the official uncompressed MNIST files: a file of the official size must have the
# official checksum. (The other datasets' extracted checksums are not recorded here; their files get
# the size, shape, count and label-range checks.)
MNIST_IMAGE_SIZE = (28, 28)
OFFICIAL_EXTRACTED = {
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637"),
}
# Bytes per value of each IDX type code: unsigned and signed byte, short, int, float, double.
IDX_VALUE_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}
IDX_NUMPY_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@functools.lru_cache(maxsize=16)
def _md5(path: Path, size: int, mtime_ns: int) -> str:
    # Keyed by size and modification time, so prepare_data and setup hash each file once per process.
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def idx_file_problem(path: Path, type_codes: tuple[int, ...] = (0x08,)) -> str | None:
    """Why ``path`` is not a whole IDX file of one of ``type_codes`` (its size must match its header), or None."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        magic = file.read(4)
        if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in type_codes or not 1 <= magic[3] <= 4:
            kind = "unsigned bytes" if type_codes == (0x08,) else "unsigned bytes or integers"
            return f"it is not an IDX file of {kind}"
        dims = file.read(4 * magic[3])
    if len(dims) < 4 * magic[3]:
        return "it is truncated inside its header"
    expected = 4 + len(dims) + IDX_VALUE_BYTES[magic[2]] * math.prod(struct.unpack(f">{magic[3]}I", dims))
    if size != expected:
        return f"it holds {size} bytes where its header promises {expected} (truncated or damaged)"
    return None


def idx_shape(path: Path) -> tuple[int, ...]:
    """The array shape in the header of an IDX file (call only on a file that ``idx_file_problem`` passes)."""
    with open(path, "rb") as file:
        ndim = file.read(4)[3]
        return struct.unpack(f">{ndim}I", file.read(4 * ndim))


@functools.lru_cache(maxsize=16)
def _label_range(path: Path, size: int, mtime_ns: int, columns: int) -> tuple[int, int]:
    with open(path, "rb") as file:
        magic = file.read(4)
        file.read(4 * magic[3])
        values = np.frombuffer(file.read(), dtype=IDX_NUMPY_TYPES[magic[2]])
    labels = values.reshape(-1, columns)[:, 0] if columns > 1 else values
    return (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)


def label_problem(labels: Path, dataset: IdxDataset) -> str | None:
    """Why the labels in ``labels`` cannot be ``dataset``'s (a label out of its class range), or None."""
    stat = labels.stat()
    low, high = _label_range(labels, stat.st_size, stat.st_mtime_ns, dataset.label_columns)
    first, last = dataset.first_label, dataset.first_label + dataset.num_classes - 1
    if low < first or high > last:
        return (
            f"{labels.name} holds labels from {low} to {high} where {dataset.description} has {dataset.num_classes} "
            f"classes, labelled {first} to {last} (are these the files of another dataset?)"
        )
    return None


def split_mismatch(images: Path, labels: Path, image_size: tuple[int, int], label_columns: int = 1) -> str | None:
    """Why an images file and its labels file cannot be one split (wrong shapes, or counts that differ), or None."""
    images_shape, labels_shape = idx_shape(images), idx_shape(labels)
    if len(images_shape) != 3 or tuple(images_shape[1:]) != image_size:
        return (
            f"{images.name} holds an array of shape {images_shape} where images of "
            f"{image_size[0]}x{image_size[1]} pixels are expected (is it a labels file?)"
        )
    expected_labels = 1 if label_columns == 1 else 2
    if len(labels_shape) != expected_labels or (label_columns > 1 and labels_shape[1] != label_columns):
        what = "one label per image" if label_columns == 1 else f"{label_columns} label values per image"
        return f"{labels.name} holds an array of shape {labels_shape} where {what} is expected"
    if images_shape[0] != labels_shape[0]:
        return f"{images.name} holds {images_shape[0]} images but {labels.name} holds {labels_shape[0]} labels"
    return None


def damaged_raw_files(raw_dir: Path, dataset: IdxDataset | None = None) -> dict[str, str]:
    """The extracted files of ``dataset`` (MNIST by default) in ``raw_dir`` that are damaged, each with the reason.

    Empty when all present files are sound. Every file gets the cheap size-against-header check; an
    MNIST file with the official size must also have the official MD5 (files of other sizes, such
    as small test datasets, are not official ones). The images and labels of each split must then
    agree (image shape, one label per image), and the labels must lie in the dataset's class range.
    """
    dataset = dataset or idx_dataset("MNIST")
    official = OFFICIAL_EXTRACTED if dataset.name == "MNIST" else {}
    label_types = (0x08,) if dataset.label_columns == 1 else (0x08, 0x0C)
    problems = {}
    for images_name, labels_name in dataset.files.values():
        for name, type_codes in ((images_name, (0x08,)), (labels_name, label_types)):
            path = raw_dir / name
            if not path.is_file():
                continue
            problem = idx_file_problem(path, type_codes)
            stat = path.stat()
            official_size, official_md5 = official.get(name, (None, None))
            is_official_size = problem is None and stat.st_size == official_size
            if is_official_size and _md5(path, stat.st_size, stat.st_mtime_ns) != official_md5:
                problem = "its MD5 checksum does not match the official file"
            if problem is not None:
                problems[name] = problem
    for images_name, labels_name in dataset.files.values():
        images, labels = raw_dir / images_name, raw_dir / labels_name
        if not (images.is_file() and labels.is_file()) or images.name in problems or labels.name in problems:
            continue
        mismatch = split_mismatch(images, labels, MNIST_IMAGE_SIZE, dataset.label_columns) or label_problem(
            labels, dataset
        )
        if mismatch is not None:
            problems[images.name] = problems[labels.name] = mismatch
    return problems
