"""The MNIST DataModule: real torchvision parsing, seeded split, normalization, augmentation, loaders."""

from pathlib import Path

import pytest
import torch
from torchvision import transforms
from torchvision.datasets import MNIST

from lightning_cnn.data import MNIST_FILES, Augmentation, MNISTDataModule, TensorBatchLoader
from lightning_cnn.errors import DataError


def setup_fit(data_dir: Path, **kwargs) -> MNISTDataModule:
    datamodule = MNISTDataModule(data_dir=data_dir, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def split_of(datamodule: MNISTDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    return datamodule.split_indices(len(MNIST(datamodule.data_dir, train=True).targets))


def test_split_sizes_from_count_and_fraction(synthetic_data_dir):
    by_count = setup_fit(synthetic_data_dir, val_split=100)
    assert len(by_count.val_labels) == 100 and len(by_count.train_labels) == 500
    by_fraction = setup_fit(synthetic_data_dir, val_split=0.25)
    assert len(by_fraction.val_labels) == 150 and len(by_fraction.train_labels) == 450


def test_split_is_disjoint_covering_and_independent_of_global_seed(synthetic_data_dir):
    torch.manual_seed(1)
    train_a, val_a = split_of(MNISTDataModule(data_dir=synthetic_data_dir, val_split=100))
    torch.manual_seed(12345)
    train_b, val_b = split_of(MNISTDataModule(data_dir=synthetic_data_dir, val_split=100))
    assert torch.equal(train_a, train_b) and torch.equal(val_a, val_b)
    assert set(train_a.tolist()).isdisjoint(val_a.tolist())
    assert sorted(train_a.tolist() + val_a.tolist()) == list(range(600))
    _, val_other = split_of(MNISTDataModule(data_dir=synthetic_data_dir, val_split=100, split_seed=7))
    assert not torch.equal(val_a, val_other)


def test_val_split_zero_trains_on_every_image_and_validates_nothing(synthetic_data_dir):
    datamodule = setup_fit(synthetic_data_dir, val_split=0)
    assert len(datamodule.train_labels) == 600 and len(datamodule.val_labels) == 0
    assert datamodule.val_dataloader() == []
    with pytest.raises(DataError, match=r"val_split=0 .* nothing to validate"):
        datamodule.setup("validate")


def test_test_set_is_the_official_test_file(synthetic_data_dir):
    datamodule = MNISTDataModule(data_dir=synthetic_data_dir)
    datamodule.setup("test")
    reference = MNIST(synthetic_data_dir, train=False)
    expected = (reference.data.unsqueeze(1).float() / 255 - datamodule.mean) / datamodule.std
    torch.testing.assert_close(datamodule.test_images, expected)
    assert torch.equal(datamodule.test_labels, reference.targets)


def test_batches_equal_torchvision_to_tensor_and_normalize(synthetic_data_dir):
    datamodule = setup_fit(synthetic_data_dir, val_split=100, mean=0.2, std=0.4)
    reference = MNIST(
        synthetic_data_dir,
        train=True,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2,), (0.4,))]),
    )
    _, val_index = split_of(datamodule)
    images, labels = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    expected = torch.stack([reference[i][0] for i in val_index[: len(labels)].tolist()])
    torch.testing.assert_close(images, expected)
    assert torch.equal(labels, torch.tensor([reference[i][1] for i in val_index[: len(labels)].tolist()]))


def test_normalized_training_set_has_zero_mean_unit_std_with_its_own_statistics(synthetic_data_dir):
    pixels = MNIST(synthetic_data_dir, train=True).data
    train_index, _ = MNISTDataModule(val_split=100).split_indices(len(pixels))
    pixels = pixels[train_index].float() / 255
    datamodule = setup_fit(synthetic_data_dir, val_split=100, mean=pixels.mean().item(), std=pixels.std().item())
    normalized = datamodule.train_images
    assert abs(normalized.mean().item()) < 1e-4 and abs(normalized.std().item() - 1) < 1e-4


def test_each_epoch_visits_every_training_index_once_in_a_new_order(synthetic_data_dir):
    datamodule = setup_fit(synthetic_data_dir, val_split=100, batch_size=64)
    loader = datamodule.train_dataloader()
    orders = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        order = loader.shard_indices()
        assert sorted(order.tolist()) == list(range(500))
        assert sum(len(labels) for _, labels in loader) == 500
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])
    assert len(loader) == 8  # ceil(500 / 64)


def test_runs_with_neighbouring_seeds_share_no_epoch_order(synthetic_data_dir):
    datamodule = setup_fit(synthetic_data_dir, val_split=100)
    images, labels = datamodule.train_images, datamodule.train_labels
    loaders = [TensorBatchLoader(images, labels, batch_size=64, shuffle=True, seed=seed) for seed in (0, 1)]
    orders = {}
    for seed, loader in enumerate(loaders):
        for epoch in range(3):
            loader.set_epoch(epoch)
            orders[seed, epoch] = loader.shard_indices()
    # With seed + epoch, seed 0's epoch e + 1 would replay seed 1's epoch e.
    assert len({tuple(order.tolist()) for order in orders.values()}) == len(orders) == 6


def test_shards_are_disjoint_cover_the_data_and_have_equal_batch_counts(synthetic_data_dir):
    datamodule = setup_fit(synthetic_data_dir, val_split=99, batch_size=64)  # 501 training images: uneven shards
    loaders = [datamodule.train_dataloader() for _ in range(2)]
    for rank, loader in enumerate(loaders):
        loader.rank, loader.world_size = rank, 2
        loader.set_epoch(3)
    shards = [loader.shard_indices().tolist() for loader in loaders]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(501))
    assert len(list(loaders[0])) == len(list(loaders[1])) == len(loaders[0])


def test_augmentation_applies_to_training_batches_only(synthetic_data_dir):
    datamodule = setup_fit(synthetic_data_dir, val_split=100, augmentation=Augmentation(degrees=30, translate=0.2))
    batch = next(iter(datamodule.val_dataloader()))

    class FakeTrainer:
        training = False

    datamodule.trainer = FakeTrainer()
    plain, _ = datamodule.on_after_batch_transfer(batch, 0)
    FakeTrainer.training = True
    augmented, _ = datamodule.on_after_batch_transfer(batch, 0)
    assert augmented.shape == plain.shape
    assert not torch.allclose(augmented, plain)
    FakeTrainer.training = False
    torch.testing.assert_close(datamodule.on_after_batch_transfer(batch, 0)[0], plain)


def test_augmenting_normalized_batches_equals_augmenting_pixels_then_normalizing(synthetic_data_dir):
    augmentation = Augmentation(degrees=30, translate=0.2, scale=0.2)
    datamodule = setup_fit(synthetic_data_dir, val_split=100, augmentation=augmentation, mean=0.2, std=0.4)

    class FakeTrainer:
        training = True

    batch = next(iter(datamodule.val_dataloader()))
    datamodule.trainer = FakeTrainer()
    torch.manual_seed(3)
    augmented, _ = datamodule.on_after_batch_transfer(batch, 0)
    pixels = batch[0] * 0.4 + 0.2  # the [0, 1] pixels behind the batch
    torch.manual_seed(3)  # the same random transforms
    expected = (augmentation(pixels) - 0.2) / 0.4
    # Equal everywhere, the borders the transforms uncover included: black there, as in the pixels.
    torch.testing.assert_close(augmented, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(augmented, batch[0])


def test_augmentation_with_zero_ranges_is_the_identity():
    images = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(Augmentation(degrees=0, translate=0, scale=0)(images), images, atol=1e-5, rtol=0)


def test_predict_loader_yields_the_test_images_in_order(synthetic_data_dir):
    datamodule = MNISTDataModule(data_dir=synthetic_data_dir, eval_batch_size=64)
    datamodule.setup("predict")
    # Predict batches carry each image's index (which names its row in the predictions file).
    batches = list(datamodule.predict_dataloader())
    images = torch.cat([images for images, _ in batches])
    indices = torch.cat([indices for _, indices in batches])
    assert torch.equal(indices, torch.arange(200))
    pixels = MNIST(synthetic_data_dir, train=False).data.unsqueeze(1)
    torch.testing.assert_close(images, (pixels.float() / 255 - datamodule.mean) / datamodule.std)


def test_failed_download_names_the_four_files_and_the_folder(tmp_path, monkeypatch):
    # An unroutable mirror stands in for a machine without network access.
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    datamodule = MNISTDataModule(data_dir=tmp_path / "empty")
    with pytest.raises(DataError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    assert all(name in message for name in MNIST_FILES)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "\n" not in message and "Tried " not in message  # one line: the reason, not every mirror tried


def test_validation_split_larger_than_the_data_is_rejected(synthetic_data_dir):
    with pytest.raises(DataError, match="val_split"):
        setup_fit(synthetic_data_dir, val_split=600)


def test_official_files_are_verified_and_parsed(real_data_dir):
    datamodule = MNISTDataModule(data_dir=real_data_dir)
    datamodule.prepare_data()  # MD5-checks the copied archives and extracts them
    datamodule.setup("fit")
    datamodule.setup("test")
    assert len(datamodule.train_labels) + len(datamodule.val_labels) == 60_000
    assert datamodule.test_images.shape == (10_000, 1, 28, 28)
    all_train = torch.cat([datamodule.train_labels, datamodule.val_labels])
    expected_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(all_train).tolist() == expected_counts
    # The default mean/std are the official training images' statistics (0.13066, 0.30811), rounded.
    normalized = torch.cat([datamodule.train_images, datamodule.val_images])
    assert abs(normalized.mean().item()) < 1e-3 and abs(normalized.std().item() - 1) < 1e-3
