"""The networks of the MNIST tutorials this project grew from, layer for layer.

Each returns logits (the originals end in log-softmax or softmax); parameter counts are for a
1x28x28 input and 10 classes and are checked by the tests. Layers are named as the tutorials
name them (``conv1``, ``pool1``, ``fc``), so summaries and dashboard tags read the same. Every
network takes ``in_channels``, ``num_classes`` and ``image_size`` and sizes its first linear layer
from them (the tutorials' 320 and 3136 are what a 1x28x28 image gives).
"""

from collections import OrderedDict

from torch import nn

from lightning_cnn.models.sizing import ImageSize, flat_features


class TwoConvNet(nn.Sequential):
    """Two 5x5 convolutions and one linear layer (PyTorch's classic MNIST example), 8,490 parameters.

    conv(1->10, k5) -> maxpool 2 -> ReLU -> conv(10->20, k5) -> Dropout2d -> maxpool 2 -> ReLU
    -> flatten 320 -> linear(320->10). ``dropout=False`` gives the variant without Dropout2d.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, dropout: bool = True, image_size: ImageSize = 28
    ) -> None:
        layers = OrderedDict(
            conv1=nn.Conv2d(in_channels, 10, kernel_size=5),
            pool1=nn.MaxPool2d(2),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(10, 20, kernel_size=5),
            dropout=nn.Dropout2d() if dropout else nn.Identity(),
            pool2=nn.MaxPool2d(2),
            relu2=nn.ReLU(),
            flatten=nn.Flatten(),
        )
        layers["fc"] = nn.Linear(flat_features(layers, in_channels, image_size), num_classes)
        super().__init__(layers)


class ThreeConvNet(nn.Sequential):
    """The two-conv net with a third convolution, 19,990 parameters.

    conv(1->10, k5) -> pool -> ReLU -> conv(10->40, k3) -> Dropout2d -> pool -> ReLU
    -> conv(40->80, k2) -> Dropout2d -> pool -> ReLU -> flatten 320 -> linear(320->10).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: ImageSize = 28) -> None:
        layers = OrderedDict(
            conv1=nn.Conv2d(in_channels, 10, kernel_size=5),
            pool1=nn.MaxPool2d(2),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(10, 40, kernel_size=3),
            dropout2=nn.Dropout2d(),
            pool2=nn.MaxPool2d(2),
            relu2=nn.ReLU(),
            conv3=nn.Conv2d(40, 80, kernel_size=2),
            dropout3=nn.Dropout2d(),
            pool3=nn.MaxPool2d(2),
            relu3=nn.ReLU(),
            flatten=nn.Flatten(),
        )
        layers["fc"] = nn.Linear(flat_features(layers, in_channels, image_size), num_classes)
        super().__init__(layers)


class ConvMLPNet(nn.Sequential):
    """Two padded 3x3 convolutions and a two-layer classifier, 421,642 parameters.

    conv(1->32, k3, pad 1) -> ReLU -> pool -> conv(32->64, k3, pad 1) -> ReLU -> pool
    -> flatten 3136 -> linear(3136->128) -> ReLU -> linear(128->10).
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, hidden_features: int = 128, image_size: ImageSize = 28
    ) -> None:
        layers = OrderedDict(
            conv1=nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, kernel_size=3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
        )
        layers["fc1"] = nn.Linear(flat_features(layers, in_channels, image_size), hidden_features)
        layers["relu3"] = nn.ReLU()
        layers["fc2"] = nn.Linear(hidden_features, num_classes)
        super().__init__(layers)


class KerasConvNet(nn.Sequential):
    """The Keras convnet of "Deep Learning with Python": convolutions 32-64-128, 104,202 parameters.

    conv32 k3 -> ReLU -> pool -> conv64 k3 -> ReLU -> pool -> conv128 k3 -> ReLU
    -> flatten 1152 -> linear(1152->10).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: ImageSize = 28) -> None:
        layers = OrderedDict(
            conv1=nn.Conv2d(in_channels, 32, kernel_size=3),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, kernel_size=3),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            conv3=nn.Conv2d(64, 128, kernel_size=3),
            relu3=nn.ReLU(),
            flatten=nn.Flatten(),
        )
        layers["fc"] = nn.Linear(flat_features(layers, in_channels, image_size), num_classes)
        super().__init__(layers)


class SmallConvNet(nn.Sequential):
    """A two-conv ``nn.Sequential`` net (3x3 then 2x2 kernels), 31,626 parameters.

    conv32 k3 -> ReLU -> pool -> conv64 k2 -> ReLU -> pool -> flatten 2304 -> linear(2304->10).
    The original ends in Softmax followed by nll_loss, which trains on the wrong loss; this one
    returns logits for cross-entropy.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: ImageSize = 28) -> None:
        layers = OrderedDict(
            conv1=nn.Conv2d(in_channels, 32, kernel_size=3),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, kernel_size=2),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
        )
        layers["fc"] = nn.Linear(flat_features(layers, in_channels, image_size), num_classes)
        super().__init__(layers)


class SmallConvKerasNet(nn.Sequential):
    """The Keras twin of :class:`SmallConvNet` (Keras' ``mnist_convnet`` example), 34,826 parameters.

    conv32 k3 -> ReLU -> pool -> conv64 k3 -> ReLU -> pool -> flatten 1600 -> linear(1600->10).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: ImageSize = 28) -> None:
        layers = OrderedDict(
            conv1=nn.Conv2d(in_channels, 32, kernel_size=3),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, kernel_size=3),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
        )
        layers["fc"] = nn.Linear(flat_features(layers, in_channels, image_size), num_classes)
        super().__init__(layers)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "ConvMLPNet",
    "KerasConvNet",
    "SmallConvKerasNet",
    "SmallConvNet",
    "ThreeConvNet",
    "TwoConvNet",
    "count_parameters",
]
