"""Learnable synthetic images for the dataset tests: one glyph per class, and the IDX files of each dataset.

A glyph is a square frame around a 3x3 grid of cells, class k lighting the cells of the bits of
k + 1. The frame fixes the glyph's extent, so the MNIST-style conversion of a picture (crop, fit,
center) keeps the cells apart; most patterns differ from their transpose, so an image shown
transposed reads as another class.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from lightning_cnn.data.datasets import idx_dataset
from lightning_cnn.data.images import to_mnist

UNITS = 11  # the glyph is 11x11 units: frame on the outer units, cells of 2x2 units at 2, 5 and 8 (inverted below)
CELL_STARTS = (2, 5, 8)


def glyph(label: int, unit: int = 3, ink: int = 255, background: int = 0, margin: int = 4) -> np.ndarray:
    """The upright glyph of class ``label`` as gray levels, ``unit`` pixels per unit, inside a margin."""
    pattern = np.zeros((UNITS, UNITS), dtype=bool)
    pattern[0, :] = pattern[-1, :] = pattern[:, 0] = pattern[:, -1] = True
    for cell in range(9):
        if (label + 1) >> cell & 1:
            row, col = CELL_STARTS[cell // 3], CELL_STARTS[cell % 3]
            pattern[row : row + 2, col : col + 2] = True
    big = np.kron(pattern, np.ones((unit, unit), dtype=bool))
    canvas = np.full((big.shape[0] + 2 * margin, big.shape[1] + 2 * margin), background, dtype=np.uint8)
    canvas[margin:-margin, margin:-margin] = np.where(big, ink, background)
    return canvas


def glyph_digits(num: int, num_classes: int, seed: int, box: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """``num`` upright 28x28 images made the MNIST way from glyphs of random size, with noise, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num) % num_classes
    rng.shuffle(labels)
    images = np.empty((num, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        converted = to_mnist(glyph(int(label), unit=int(rng.integers(2, 5))).astype(np.float32), box=box)
        noisy = converted[0].numpy().astype(np.int16) + rng.integers(-20, 21, size=(28, 28))
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images, labels


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    """Write ``array`` in the IDX format (unsigned bytes, or big-endian int32 with ``type_code=0x0C``)."""
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = array.astype(np.uint8 if type_code == 0x08 else ">i4").tobytes()
    path.write_bytes(header + data)


def write_dataset(
    data_dir: Path, name: str, emnist_split: str = "balanced", num_train: int = 400, num_test: int = 200
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``data_dir/<name>/raw/`` in the dataset's real on-disk format with the names torchvision expects.

    EMNIST's images are stored transposed and its letters labelled from 1; QMNIST's labels are
    int32 rows of 8 values, the class first. Returns the upright images and 0-based labels of each split.
    """
    spec = idx_dataset(name, emnist_split)
    raw = data_dir / spec.name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, num, seed in (("train", num_train, 0), ("test", num_test, 1)):
        images, labels = glyph_digits(num, spec.num_classes, seed, box=spec.picture_box)
        images_file, labels_file = spec.files[split]
        write_idx(raw / images_file, images.transpose(0, 2, 1) if spec.transposed else images)
        stored_labels = labels + spec.first_label
        if spec.label_columns > 1:
            extra = np.random.default_rng(seed).integers(0, 1000, size=(num, spec.label_columns - 1))
            write_idx(raw / labels_file, np.column_stack([stored_labels, extra]), type_code=0x0C)
        else:
            write_idx(raw / labels_file, stored_labels)
        written[split] = (images, labels)
    return written


CLASSES = ("bars", "corner", "dots", "ring")


def write_image_folder(root: Path, per_class: int, seed: int, colour: bool = False) -> Path:
    """PNGs of each class's glyph at random sizes, light on dark (coloured at random with ``colour``)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            gray = glyph(label, unit=int(rng.integers(2, 6)), margin=int(rng.integers(1, 6))).astype(float)
            gray = np.clip(gray + rng.normal(0, 12, gray.shape), 0, 255)
            if colour:
                tint = rng.uniform(0.4, 1.0, size=3)
                Image.fromarray((gray[..., None] * tint).astype(np.uint8), "RGB").save(root / name / f"{i}.png")
            else:
                Image.fromarray(gray.astype(np.uint8)).save(root / name / f"{i}.png")
    return root
