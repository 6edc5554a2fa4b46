"""A user's folder of labelled images in torchvision's ImageFolder layout (``root/<class name>/<image>``).

torchvision's ``ImageFolder`` finds the classes and files; this module names what it would skip
or refuse (files that are not images, an empty root, one class only) in one sentence each, and
decodes a picture the same way for training, streaming and predict: grayscale or RGB, resized
to a square of ``image_size`` pixels, as uint8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from lightning_cnn.data.images import IMAGE_SUFFIXES, SUPPORTED_FORMATS, ImageReadError
from lightning_cnn.errors import DataError


def is_image_name(path: str) -> bool:
    """Whether a file counts as an image by its name (the suffixes predict reads, any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_resized(path: str | Path, channels: int, image_size: int) -> Tensor:
    """Decode one picture as uint8 ``(channels, image_size, image_size)``: gray or RGB, resized to the square.

    Raises:
        ImageReadError: the file is not a readable image.
    """
    try:
        with Image.open(path) as image:
            image.seek(0)  # of an animated GIF or WebP, or a multi-page TIFF: the first frame
            image = ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, EOFError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read {path} as an image ({error}); use a {SUPPORTED_FORMATS} file") from None
    return pil_to_tensor(image)


class FolderLoader:
    """``ImageFolder``'s loader: ``read_resized`` with fixed channels and size (a class, so workers can pickle it)."""

    def __init__(self, channels: int, image_size: int) -> None:
        self.channels, self.image_size = channels, image_size

    def __call__(self, path: str) -> Tensor:
        return read_resized(path, self.channels, self.image_size)


def scan_folder(root: Path, option: str, channels: int, image_size: int) -> ImageFolder:
    """The ``ImageFolder`` of ``root``, after checking that it holds at least two classes, each with images.

    Each file that is not an image (by its name) is named on stderr as skipped.

    Raises:
        DataError: ``root`` is not a folder, holds no class folder, only one, or a class folder without images.
    """
    if not root.is_dir():
        raise DataError(
            f"data.{option}={root} is not a folder; point it at a folder with one sub-folder of images per class"
        )
    class_folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    loose = sorted(entry.name for entry in root.iterdir() if entry.is_file())
    if not class_folders:
        found = f" (it holds {len(loose)} files, such as {loose[0]}, but no folders)" if loose else ""
        raise DataError(
            f"data.{option}={root} holds no class folders{found}; put the images in one sub-folder per class "
            f"({root}/<class name>/*.png)"
        )
    if len(class_folders) == 1:
        raise DataError(
            f"data.{option}={root} holds one class folder only ({class_folders[0]}); a classifier needs at least "
            "two: add one sub-folder of images per class"
        )
    folder = ImageFolder(root, loader=FolderLoader(channels, image_size), is_valid_file=is_image_name, allow_empty=True)
    counts = torch.bincount(torch.tensor(folder.targets, dtype=torch.long), minlength=len(folder.classes))
    empty = [name for name, count in zip(folder.classes, counts.tolist(), strict=True) if count == 0]
    if empty:
        raise DataError(
            f"data.{option}={root}: the class folder {empty[0]} holds no {SUPPORTED_FORMATS} files"
            f"{f' (nor do {len(empty) - 1} others)' if len(empty) > 1 else ''}; put images there or remove it"
        )
    if rank_zero_only.rank == 0:
        for name in folder.classes:
            for path in sorted((root / name).rglob("*")):
                if path.is_file() and not is_image_name(str(path)):
                    print(
                        f"skipped: {path} (not an image file: only names ending in {', '.join(IMAGE_SUFFIXES[:-1])} "
                        f"or {IMAGE_SUFFIXES[-1]} are read)",
                        file=sys.stderr,
                    )
    return folder


def check_same_classes(train: ImageFolder, test: ImageFolder) -> None:
    """Raise a DataError unless the train and test roots hold the same class folders."""
    if train.classes == test.classes:
        return
    missing = sorted(set(train.classes) - set(test.classes))
    extra = sorted(set(test.classes) - set(train.classes))
    differences = []
    if missing:
        differences.append(f"data.test_root lacks {', '.join(missing)}")
    if extra:
        differences.append(f"data.test_root has {', '.join(extra)}, which data.train_root lacks")
    raise DataError(
        f"the class folders of data.train_root={train.root} and data.test_root={test.root} differ "
        f"({'; '.join(differences)}); use the same class folders in both"
    )


def decode_all(folder: ImageFolder, indices: list[int] | None = None) -> tuple[Tensor, Tensor, list[str], list[str]]:
    """Decode the images of ``folder`` (all, or those at ``indices``) into one uint8 tensor, once.

    Returns the images ``(N, C, H, W)``, their labels, their paths, and the reasons for the files
    that could not be read (each also named on stderr as skipped).
    """
    images, labels, paths, failures = [], [], [], []
    for index in range(len(folder.samples)) if indices is None else indices:
        path, label = folder.samples[index]
        try:
            images.append(folder.loader(path))
        except ImageReadError as error:
            failures.append(str(error))
            if rank_zero_only.rank == 0:
                print(f"skipped: {error}", file=sys.stderr)
            continue
        labels.append(label)
        paths.append(path)
    if not images:
        raise DataError(f"none of the image files in {folder.root} could be read (see the lines above)")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), paths, failures
