"""The data: the contract every dataset meets, the MNIST family and image folders on it, the fast tensor loader,
augmentation and file checks."""

from lightning_cnn.data.augmentation import Augmentation
from lightning_cnn.data.base import ImageDataModule
from lightning_cnn.data.files import MNIST_FILES, damaged_raw_files
from lightning_cnn.data.image_folder import ImageFolderDataModule
from lightning_cnn.data.in_memory import InMemoryImageDataModule
from lightning_cnn.data.loader import TensorBatchLoader
from lightning_cnn.data.mnist import MNISTDataModule

__all__ = [
    "MNIST_FILES",
    "Augmentation",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataModule",
    "MNISTDataModule",
    "TensorBatchLoader",
    "damaged_raw_files",
]
