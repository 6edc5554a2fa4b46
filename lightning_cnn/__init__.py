"""lightning_cnn: convolutional networks on MNIST-style digits, trained and compared from YAML."""

from lightning_cnn.data import Augmentation, MNISTDataModule
from lightning_cnn.module import ImageClassifier

__all__ = ["Augmentation", "ImageClassifier", "MNISTDataModule"]
__version__ = "0.1.0"
