"""Reading a user's image files (PNG, JPEG, BMP, GIF, WebP, TIFF; any size and mode) as MNIST-style 28x28 digits.

MNIST was made by scaling each digit to fit a 20x20 box (keeping its aspect ratio, anti-aliased)
and centering its center of mass in a 28x28 field, light ink on a black background. This module
does the same to an arbitrary picture of one digit and returns uint8 pixels, so the DataModule
normalizes them exactly like its training batches. Of an animated GIF or WebP, or a multi-page TIFF,
the first frame is read.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from lightning_cnn.errors import DataError

# The files a folder or a glob contributes, by name (any one file named directly is tried whatever its name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The formats, as error messages name them.
SUPPORTED_FORMATS = "PNG, JPEG, BMP, GIF, WebP or TIFF"
MNIST_SIZE = 28
DIGIT_BOX = 20
# Pixels darker than this fraction of the digit's brightest ink (after background removal) are
# background when finding the bounding box; it keeps faint paper texture out of the crop.
INK_THRESHOLD = 0.25
# Below this contrast (on the 0-255 scale) between ink and background there is no digit to read.
MIN_CONTRAST = 16.0


class ImageReadError(DataError):
    """One image file could not be read or holds no digit; the others can still be predicted."""


def _others(verb: str, paths: list[Path]) -> str:
    """`` (it holds 2 other files, such as notes.txt)``, or nothing when there are none."""
    if not paths:
        return ""
    return f" (it {verb} {len(paths)} other file{'s' if len(paths) > 1 else ''}, such as {paths[0].name})"


def scan_images(pattern: str | Path) -> tuple[list[Path], list[Path]]:
    """The image files named by ``pattern`` and, of a folder or a glob, the other files it holds (left out).

    ``pattern`` is one file, a folder (its images, not recursive) or a glob. A folder's or a glob's
    files count as images by their suffix (``IMAGE_SUFFIXES``, any case); one file named directly
    is an image whatever its name (reading it tells). Both lists are sorted.

    Raises:
        DataError: when no image file is named, so a typo in the path is not mistaken for an empty result.
    """
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        found = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if not found:
            account = _others("holds", others)
            raise DataError(
                f"folder {path} holds no image files{account}; put {SUPPORTED_FORMATS} files there or point "
                "data.predict_path at other files"
            )
        return found, others
    if path.is_file():
        return [path], []
    if glob.has_magic(str(pattern)):
        files = sorted(p for p in map(Path, glob.glob(str(path), recursive=True)) if p.is_file())
        found = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if not found:
            account = _others("matches", others)
            raise DataError(
                f"the pattern {pattern} matches no {SUPPORTED_FORMATS} file{account}; check the pattern "
                "(quote it in the shell)"
            )
        return found, others
    raise DataError(f"{pattern} does not exist; set data.predict_path to an image file, a folder or a glob")


def find_images(pattern: str | Path) -> list[Path]:
    """The image files named by ``pattern`` (see ``scan_images``); each other file of a folder or a glob is
    named on stderr as skipped (by global rank zero only, as a distributed run reads the files on every rank).

    Raises:
        DataError: when no image file is named, so a typo in the path is not mistaken for an empty result.
    """
    found, others = scan_images(pattern)
    if rank_zero_only.rank == 0:
        for other in others:
            print(
                f"skipped: {other} (not an image file: only names ending in {', '.join(IMAGE_SUFFIXES[:-1])} "
                f"or {IMAGE_SUFFIXES[-1]} are read)",
                file=sys.stderr,
            )
    return found


def read_grayscale(path: Path) -> np.ndarray:
    """Decode one image file into float32 gray levels on the 0-255 scale, shape (height, width).

    Transparent areas count as background: they are composited onto the color opposite to the ink.
    """
    try:
        with Image.open(path) as image:
            image.seek(0)  # of an animated GIF or WebP, or a multi-page TIFF: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
    except (UnidentifiedImageError, OSError, EOFError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read {path} as an image ({error}); use a {SUPPORTED_FORMATS} file") from None
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = np.asarray(image, dtype=np.float32)
        low, high = float(gray.min()), float(gray.max())
        return (gray - low) * (255.0 / (high - low)) if high > low else np.zeros_like(gray)
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        gray = np.asarray(image.convert("RGB").convert("L"), dtype=np.float32)
        opaque = alpha[..., 0] > 0.5
        ink_is_dark = bool(opaque.any()) and float(gray[opaque].mean()) < 128
        background = 255.0 if ink_is_dark else 0.0
        return gray * alpha[..., 0] + background * (1 - alpha[..., 0])
    return np.asarray(image.convert("L"), dtype=np.float32)


def _border_level(gray: np.ndarray) -> float:
    """The background's gray level: the median of the outermost rows and columns."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border))


def to_mnist(gray: np.ndarray, name: str = "image", box: int = DIGIT_BOX) -> Tensor:
    """Turn gray levels (height, width) into an MNIST-style uint8 tensor of shape (1, 28, 28).

    Light ink on dark, background at zero; the digit's bounding box scaled to fit ``box`` x ``box``
    (20 for MNIST) with its aspect ratio kept, then placed so that its center of mass is the center
    of the 28x28 field.
    """
    background = _border_level(gray)
    if background > 127.5:  # dark ink on light paper: MNIST is the other way round
        gray, background = 255.0 - gray, 255.0 - background
    ink = np.clip(gray - background, 0.0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise ImageReadError(f"{name} shows no digit (it is blank or has almost no contrast); crop it to one digit")
    ink *= 255.0 / peak
    rows = np.flatnonzero((ink > INK_THRESHOLD * 255.0).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD * 255.0).any(axis=0))
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    height, width = digit.shape
    scale = box / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = Image.fromarray(digit.astype(np.float32)).resize((new_width, new_height), Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)

    # Center of mass of the scaled digit, then the offset that puts it at (14, 14), where MNIST has it.
    mass = digit.sum()
    center_row = float((digit.sum(axis=1) * np.arange(new_height)).sum() / mass)
    center_col = float((digit.sum(axis=0) * np.arange(new_width)).sum() / mass)
    top = int(np.clip(round(MNIST_SIZE / 2 - center_row), 0, MNIST_SIZE - new_height))
    left = int(np.clip(round(MNIST_SIZE / 2 - center_col), 0, MNIST_SIZE - new_width))
    field = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    field[top : top + new_height, left : left + new_width] = digit
    return torch.from_numpy(np.rint(field).astype(np.uint8)).unsqueeze(0)


def load_image(path: str | Path, box: int = DIGIT_BOX) -> Tensor:
    """Read one image file as an MNIST-style uint8 tensor of shape (1, 28, 28), its ink fit to ``box`` pixels.

    Raises:
        ImageReadError: the file is not a readable image or shows no digit.
    """
    path = Path(path)
    return to_mnist(read_grayscale(path), name=str(path), box=box)
