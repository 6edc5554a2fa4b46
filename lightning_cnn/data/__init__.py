"""The data: the contract every dataset meets, MNIST on it, the fast tensor loader, augmentation and file checks."""

from lightning_cnn.data.augmentation import Augmentation
from lightning_cnn.data.base import ImageDataModule
from lightning_cnn.data.files import MNIST_FILES, damaged_raw_files
from lightning_cnn.data.loader import TensorBatchLoader
from lightning_cnn.data.mnist import MNISTDataModule

__all__ = [
    "MNIST_FILES",
    "Augmentation",
    "ImageDataModule",
    "MNISTDataModule",
    "TensorBatchLoader",
    "damaged_raw_files",
]
