"""The architecture zoo: plain ``nn.Module`` networks that map a batch of images to logits."""

from lightning_cnn.models.batchnorm import BatchNormCNN
from lightning_cnn.models.tutorial import (
    ConvMLPNet,
    KerasConvNet,
    SmallConvKerasNet,
    SmallConvNet,
    ThreeConvNet,
    TwoConvNet,
    count_parameters,
)

__all__ = [
    "BatchNormCNN",
    "ConvMLPNet",
    "KerasConvNet",
    "SmallConvKerasNet",
    "SmallConvNet",
    "ThreeConvNet",
    "TwoConvNet",
    "count_parameters",
]
