"""The user's own folder of images (one sub-folder per class): training, class names, normalization, streaming and
the errors a bad folder gets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, logged, run_main
from glyphs import CLASSES, glyph, write_image_folder
from PIL import Image

from lightning_cnn.data import ImageFolderDataModule
from lightning_cnn.data.statistics import pixel_statistics


def cli_args(tmp_path: Path, train_root: Path, *extra: str, channels: int = 1, image_size: int = 28) -> list[str]:
    """The command line a user would type: the image-folder config, their folder, and a few overrides."""
    return [
        *("--config", str(REPO / "configs" / "image_folder_two_conv.yaml"), "--data.train_root", str(train_root)),
        *("--data.channels", str(channels), "--data.image_size", str(image_size), "--data.batch_size", "32"),
        *("--model.backbone", "lightning_cnn.models.TwoConvNet", "--model.backbone.init_args.dropout", "false"),
        *("--model.backbone.init_args.num_classes", str(len(CLASSES))),
        *("--model.backbone.init_args.in_channels", str(channels)),
        *("--model.backbone.init_args.image_size", str(image_size)),
        *("--model.optimizer", "torch.optim.Adam", "--model.optimizer.lr", "0.005", "--seed_everything", "0"),
        *("--trainer.max_epochs", "8", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *("--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger"),
        *("--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.logger.init_args.name", "folder"),
        *("--insight.input_grid", "false", "--insight.filters", "false", "--insight.graph", "false"),
        *extra,
    ]


def logged_test_accuracy(run: Path) -> float:
    return logged(run, "test/acc")[-1]


@pytest.mark.parametrize("streaming", [False, True], ids=["in memory", "streaming"])
def test_a_folder_of_pngs_trains_tests_and_predicts_with_its_folder_names(streaming, tmp_path, capsys):
    train_root = write_image_folder(tmp_path / "pictures", per_class=60, seed=0)
    (train_root / "dots" / "notes.txt").write_text("not a picture")
    args = cli_args(tmp_path, train_root, "--data.streaming", str(streaming).lower(), "--data.num_workers", "0")
    code, _, err = run_main("fit", *args, capsys=capsys)
    assert code == 0, err[-3000:]
    assert f"skipped: {train_root / 'dots' / 'notes.txt'} (not an image file" in err
    run = tmp_path / "logs" / "folder" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["num_classes"] == len(CLASSES)

    code, _, err = run_main("test", *args, "--ckpt_path", "last", capsys=capsys)
    assert code == 0, err[-3000:]
    accuracy = logged_test_accuracy(run)
    assert accuracy > 0.9, accuracy

    output = tmp_path / "predictions.csv"
    code, _, err = run_main("predict", *args, "--ckpt_path", "last", "--predictions.output", str(output), capsys=capsys)
    assert code == 0, err[-3000:]
    with open(output, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["path", "prediction", *(f"probability_{name}" for name in CLASSES)]
    # The held-out test images (24 of 240), each named by its file; its folder is its class.
    assert len(rows) == 1 + 24
    correct = [Path(row[0]).parent.name == row[1] for row in rows[1:]]
    print(f"image folder ({'streaming' if streaming else 'in memory'}): test accuracy {accuracy:.4f}")
    assert np.mean(correct) > 0.9


def test_three_channel_images_with_a_test_root_use_per_channel_statistics(tmp_path, capsys):
    train_root = write_image_folder(tmp_path / "train", per_class=50, seed=0, colour=True)
    test_root = write_image_folder(tmp_path / "test", per_class=10, seed=1, colour=True)
    datamodule = ImageFolderDataModule(train_root, test_root=test_root, image_size=32, channels=3, val_split=20)
    assert datamodule.image_shape == (3, 32, 32) and datamodule.class_names == list(CLASSES)
    pixels = datamodule._pixels("train")[0]
    assert pixels.shape[1:] == (3, 32, 32) and pixels.dtype == torch.uint8
    expected_mean, expected_std = pixel_statistics(pixels)
    assert datamodule.mean == pytest.approx(expected_mean) and len(datamodule.mean) == 3
    assert datamodule.std == pytest.approx(expected_std)
    datamodule.setup("fit")
    channel_means = datamodule.train_images.mean(dim=(0, 2, 3))
    assert torch.allclose(channel_means, torch.zeros(3), atol=1e-4)
    # Shown back on the [0, 1] scale, per channel.
    torch.testing.assert_close(datamodule.denormalize(datamodule.train_images), pixels.float() / 255)

    args = cli_args(tmp_path, train_root, "--data.test_root", str(test_root), channels=3, image_size=32)
    code, _, err = run_main("fit", *args, capsys=capsys)
    assert code == 0, err[-3000:]
    code, _, err = run_main("test", *args, "--ckpt_path", "last", capsys=capsys)
    assert code == 0, err[-3000:]
    accuracy = logged_test_accuracy(tmp_path / "logs" / "folder" / "version_0")
    print(f"image folder, 3x32x32 with a test root: test accuracy {accuracy:.4f}")
    assert accuracy > 0.9, accuracy


def test_streamed_batches_equal_the_in_memory_ones(tmp_path):
    root = write_image_folder(tmp_path / "pictures", per_class=10, seed=0)
    in_memory = ImageFolderDataModule(root, val_split=8, test_split=8, eval_batch_size=100)
    streamed = ImageFolderDataModule(root, val_split=8, test_split=8, eval_batch_size=100, streaming=True)
    streamed.num_workers = 0
    assert streamed.mean == pytest.approx(in_memory.mean) and streamed.std == pytest.approx(in_memory.std)
    for module in (in_memory, streamed):
        module.setup("fit")
    memory_images, memory_labels = in_memory.on_after_batch_transfer(next(iter(in_memory.val_dataloader())), 0)
    streamed_images, streamed_labels = streamed.on_after_batch_transfer(next(iter(streamed.val_dataloader())), 0)
    torch.testing.assert_close(streamed_images, memory_images)
    assert torch.equal(streamed_labels, memory_labels)


def test_predict_resizes_a_picture_as_the_training_images_were(tmp_path):
    root = write_image_folder(tmp_path / "pictures", per_class=3, seed=0)
    picture = tmp_path / "big.png"
    Image.fromarray(glyph(2, unit=9)).save(picture)
    datamodule = ImageFolderDataModule(root, image_size=20, predict_path=str(picture))
    image = datamodule.read_predict_images()[0]
    expected = np.asarray(Image.open(picture).convert("L").resize((20, 20), Image.Resampling.BILINEAR))
    assert torch.equal(image[0], torch.from_numpy(expected))


def bad_folder(tmp_path: Path, capsys, train_root: Path, *extra: str) -> str:
    code, _, err = run_main("fit", *cli_args(tmp_path, train_root, *extra), capsys=capsys)
    assert code == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err[-3000:]
    assert not list((tmp_path / "logs").rglob("version_*")), "a run folder was left behind"
    return error_lines[0]


def test_an_empty_root_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    message = bad_folder(tmp_path, capsys, tmp_path / "empty")
    assert "holds no class folders" in message and "<class name>" in message, message


def test_one_class_only_is_one_error_line(tmp_path, capsys):
    root = write_image_folder(tmp_path / "pictures", per_class=3, seed=0)
    for name in CLASSES[1:]:
        for file in (root / name).iterdir():
            file.unlink()
        (root / name).rmdir()
    message = bad_folder(tmp_path, capsys, root)
    assert "one class folder only (bars)" in message and "at least two" in message, message


def test_a_class_folder_without_images_is_one_error_line(tmp_path, capsys):
    root = write_image_folder(tmp_path / "pictures", per_class=3, seed=0)
    (root / "empty_class").mkdir()
    (root / "empty_class" / "readme.txt").write_text("nothing here")
    message = bad_folder(tmp_path, capsys, root)
    assert "empty_class holds no" in message, message


def test_class_folders_that_differ_between_train_and_test_root_are_one_error_line(tmp_path, capsys):
    train_root = write_image_folder(tmp_path / "train", per_class=3, seed=0)
    test_root = write_image_folder(tmp_path / "test", per_class=2, seed=1)
    (test_root / "ring").rename(test_root / "rings")
    message = bad_folder(tmp_path, capsys, train_root, "--data.test_root", str(test_root))
    for word in ["differ", "data.test_root lacks ring", "rings", "same class folders"]:
        assert word in message, message


def test_a_set_over_the_memory_budget_names_the_streaming_option(tmp_path, capsys):
    root = write_image_folder(tmp_path / "pictures", per_class=5, seed=0)
    message = bad_folder(tmp_path, capsys, root, "--data.memory_budget_mb", "0.01")
    for word in ["20 images", "data.memory_budget_mb=0.01", "data.streaming=true"]:
        assert word in message, message
