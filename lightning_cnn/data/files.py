"""The MNIST files on disk: their names, official sizes and checksums, and header checks that run before parsing."""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from pathlib import Path

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Size and MD5 of the official uncompressed files. torchvision checks the .gz archives when it
# downloads or extracts them, but trusts any extracted file that exists: a truncated or damaged one
# would fail deep inside its parser, or load silently. These catch it before parsing.
MNIST_IMAGE_SIZE = (28, 28)
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
            mismatch = split_mismatch(images, labels, MNIST_IMAGE_SIZE)
            if mismatch is not None:
                problems[images.name] = problems[labels.name] = mismatch
    return problems
