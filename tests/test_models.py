"""The zoo reproduces the tutorials' networks exactly: output shapes and parameter counts."""

import pytest
import torch

from lightning_cnn import models

SEED_PARAMETER_COUNTS = [
    (models.TwoConvNet, {}, 8_490),
    (models.TwoConvNet, {"dropout": False}, 8_490),
    (models.ThreeConvNet, {}, 19_990),
    (models.ConvMLPNet, {}, 421_642),
    (models.KerasConvNet, {}, 104_202),
    (models.SmallConvNet, {}, 31_626),
    (models.SmallConvKerasNet, {}, 34_826),
]


@pytest.mark.parametrize(("model_class", "kwargs", "expected"), SEED_PARAMETER_COUNTS)
def test_seed_networks_match_the_tutorials(model_class, kwargs, expected):
    model = model_class(**kwargs)
    assert models.count_parameters(model) == expected
    logits = model(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)


@pytest.mark.parametrize(("model_class", "kwargs", "expected"), SEED_PARAMETER_COUNTS)
@pytest.mark.parametrize(("in_channels", "image_size", "num_classes"), [(3, 32, 10), (3, 32, 26), (1, 28, 47)])
def test_seed_networks_run_on_other_channels_sizes_and_classes(
    model_class, kwargs, expected, in_channels, image_size, num_classes
):
    model = model_class(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
    assert model(torch.randn(2, in_channels, image_size, image_size)).shape == (2, num_classes)
    # The layer names (checkpoint keys) are the same whatever the input.
    assert [name for name, _ in model.named_children()] == [name for name, _ in model_class(**kwargs).named_children()]


def test_the_flatten_size_follows_the_input_instead_of_being_fixed():
    assert models.TwoConvNet().fc.in_features == 320 and models.ConvMLPNet().fc1.in_features == 3136
    assert models.TwoConvNet(in_channels=3, image_size=32).fc.in_features == 20 * 5 * 5
    assert models.ConvMLPNet(image_size=(32, 48)).fc1.in_features == 64 * 8 * 12


def test_an_image_too_small_for_the_network_is_one_clear_error():
    from lightning_cnn.errors import UserError

    with pytest.raises(UserError, match=r"1x8x8 are too small .*data\.image_size"):
        models.ThreeConvNet(image_size=8)
    with pytest.raises(UserError, match="at least 4x4"):
        models.BatchNormCNN(image_size=3)


def test_two_conv_net_without_dropout_has_no_dropout_layer():
    with_dropout = models.TwoConvNet()
    without = models.TwoConvNet(dropout=False)
    assert any(isinstance(m, torch.nn.Dropout2d) for m in with_dropout.modules())
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in without.modules())


def test_seed_networks_return_logits_not_probabilities():
    torch.manual_seed(0)
    model = models.SmallConvNet().eval()
    logits = model(torch.randn(4, 1, 28, 28))
    # Softmax outputs would be positive and sum to one per row; logits do neither in general.
    assert not torch.allclose(logits.sum(dim=1), torch.ones(4))
    assert (logits < 0).any()


@pytest.mark.parametrize(("in_channels", "num_classes", "width"), [(1, 10, 32), (3, 47, 16)])
def test_batchnorm_cnn_takes_channels_classes_and_width(in_channels, num_classes, width):
    model = models.BatchNormCNN(in_channels=in_channels, num_classes=num_classes, width=width)
    assert model(torch.randn(2, in_channels, 28, 28)).shape == (2, num_classes)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_batchnorm_cnn_width_scales_parameters():
    assert models.count_parameters(models.BatchNormCNN(width=16)) < models.count_parameters(
        models.BatchNormCNN(width=32)
    )


ZOO = [getattr(models, name) for name in models.__all__ if isinstance(getattr(models, name), type)]


def positional_key(model: torch.nn.Module, key: str) -> str:
    """The key an anonymous ``nn.Sequential`` would have given the same weight (``conv1`` -> ``0``)."""
    parts, module = key.split("."), model
    for index, part in enumerate(parts[:-1]):
        children = dict(module.named_children())
        if isinstance(module, torch.nn.Sequential):
            parts[index] = str(list(children).index(part))
        module = children[part]
    return ".".join(parts)


@pytest.mark.parametrize("model_class", ZOO)
def test_every_zoo_network_names_its_layers(model_class):
    names = [name for name, _ in model_class().named_modules() if name]
    assert names and not any(part.isdigit() for name in names for part in name.split(".")), names


@pytest.mark.parametrize("model_class", ZOO)
def test_checkpoints_with_the_former_positional_names_still_load(model_class):
    from lightning_cnn.checkpoints import rename_positional_keys

    torch.manual_seed(0)
    trained, fresh = model_class().eval(), model_class().eval()
    old_style = {positional_key(trained, key): value for key, value in trained.state_dict().items()}
    assert set(old_style) != set(trained.state_dict())  # the old names really differ
    fresh.load_state_dict(rename_positional_keys(old_style, fresh))  # strict: every key found
    images = torch.randn(2, 1, 28, 28)
    assert torch.equal(fresh(images), trained(images))
