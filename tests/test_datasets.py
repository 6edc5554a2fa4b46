"""The MNIST family on the default data module: each dataset's real file layout, classes, normalization and errors.

Tiny learnable datasets are written in each dataset's own on-disk format (tests/glyphs.py), so
torchvision's real parsing runs; a short fit must then reach high test accuracy, which shows that
labels, class names, orientation and normalization flow end to end.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_main
from glyphs import glyph, write_dataset, write_idx
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_cnn.data import MNISTDataModule
from lightning_cnn.errors import DataError

# (dataset, EMNIST split, number of classes, the first class names)
DATASETS = {
    "MNIST": ("MNIST", "balanced", 10, ["0", "1"]),
    "FashionMNIST": ("FashionMNIST", "balanced", 10, ["T-shirt/top", "Trouser"]),
    "KMNIST": ("KMNIST", "balanced", 10, ["o", "ki"]),
    "QMNIST": ("QMNIST", "balanced", 10, ["0", "1"]),
    "EMNIST letters": ("EMNIST", "letters", 26, ["a", "b"]),
    "EMNIST balanced": ("EMNIST", "balanced", 47, ["0", "1"]),
}


def write_config(tmp_path: Path, dataset: str, emnist_split: str, num_classes: int, **data: object) -> Path:
    config = {
        "seed_everything": 0,
        "model": {
            "backbone": {
                "class_path": "lightning_cnn.models.TwoConvNet",
                "init_args": {"num_classes": num_classes, "dropout": False},
            },
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.005}},
        },
        "data": {
            "data_dir": str(tmp_path / "data"),
            "dataset": dataset,
            "emnist_split": emnist_split,
            "val_split": 40,
            "batch_size": 32,
            "download": False,
            **data,
        },
        "trainer": {
            "max_epochs": 10,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "datasets"},
            },
        },
        "insight": {"input_grid": False, "filters": False, "graph": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def logged_scalar(run: Path, tag: str) -> float:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    return events.Scalars(tag)[-1].value


def one_error_line(code: int, err: str) -> str:
    assert code != 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err[-3000:]
    return err[err.index(error_lines[0]) :]


@pytest.mark.parametrize("case", DATASETS)
def test_each_dataset_trains_to_high_accuracy_and_names_its_classes(case, tmp_path, capsys):
    dataset, split, num_classes, first_names = DATASETS[case]
    num_train = 400 if num_classes == 10 else 25 * num_classes
    write_dataset(tmp_path / "data", dataset, split, num_train=num_train, num_test=8 * num_classes)
    config = write_config(tmp_path, dataset, split, num_classes)
    code, _, err = run_main("fit", "--config", str(config), capsys=capsys)
    assert code == 0, err[-3000:]
    run = tmp_path / "logs" / "datasets" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["num_classes"] == num_classes  # linked from the data module

    code, _, err = run_main("test", "--config", str(config), "--ckpt_path", "last", capsys=capsys)
    assert code == 0, err[-3000:]
    accuracy = logged_scalar(run, "test/acc")
    assert accuracy > 0.9, accuracy

    # Upright pictures, dark on light and larger than 28x28, converted as the dataset's images were made.
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for label in range(num_classes):
        Image.fromarray(glyph(label, unit=9, ink=20, background=235, margin=30)).save(pictures / f"{label:02d}.png")
    output = tmp_path / "predictions.csv"
    code, _, err = run_main(
        *("predict", "--config", str(config), "--ckpt_path", "last"),
        *("--data.predict_path", str(pictures), "--predictions.output", str(output)),
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    with open(output, newline="") as file:
        rows = list(csv.reader(file))
    names = MNISTDataModule(dataset=dataset, emnist_split=split).class_names
    assert len(names) == num_classes and names[:2] == first_names
    assert rows[0] == ["path", "prediction", *(f"probability_{name}" for name in names)]
    expected = [names[int(Path(row[0]).stem)] for row in rows[1:]]
    agreement = np.mean([row[1] == name for row, name in zip(rows[1:], expected, strict=True)])
    print(f"{case}: test accuracy {accuracy:.4f}, {agreement:.2%} of the upright pictures predicted as their class")
    assert agreement > 0.9, (agreement, rows)


def test_emnist_images_are_upright_and_letters_are_labelled_from_zero(tmp_path):
    written = write_dataset(tmp_path, "EMNIST", "letters", num_train=260, num_test=52)
    datamodule = MNISTDataModule(data_dir=tmp_path, dataset="EMNIST", emnist_split="letters", val_split=0)
    datamodule.setup("fit")
    datamodule.setup("test")
    images, labels = written["test"]
    pixels = torch.from_numpy(images).unsqueeze(1).float() / 255
    torch.testing.assert_close(datamodule.denormalize(datamodule.test_images), pixels, atol=1e-5, rtol=0)
    assert torch.equal(datamodule.test_labels, torch.from_numpy(labels).long())
    assert datamodule.train_labels.min() == 0 and datamodule.train_labels.max() == 25
    assert datamodule.num_classes == 26 and datamodule.class_names == [chr(ord("a") + k) for k in range(26)]
    assert datamodule.recipe()["dataset"] == "EMNIST" and datamodule.recipe()["emnist_split"] == "letters"


def test_qmnist_reads_the_class_column_of_its_label_rows(tmp_path):
    written = write_dataset(tmp_path, "QMNIST", num_train=100, num_test=50)
    datamodule = MNISTDataModule(data_dir=tmp_path, dataset="QMNIST", val_split=0)
    datamodule.setup("test")
    assert torch.equal(datamodule.test_labels, torch.from_numpy(written["test"][1]).long())
    assert "emnist_split" not in datamodule.recipe()


def test_default_normalization_is_the_training_files_own_and_is_cached_beside_it(tmp_path):
    written = write_dataset(tmp_path, "KMNIST", num_train=300, num_test=50)
    datamodule = MNISTDataModule(data_dir=tmp_path, dataset="KMNIST", val_split=0)
    pixels = torch.from_numpy(written["train"][0]).double() / 255
    assert datamodule.mean == pytest.approx(pixels.mean().item(), abs=1e-9)
    assert datamodule.std == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-9)
    cache = json.loads((tmp_path / "KMNIST" / "normalization.json").read_text())
    assert cache["train-images-idx3-ubyte"]["mean"] == [datamodule.mean]
    datamodule.setup("fit")
    assert abs(datamodule.train_images.mean().item()) < 1e-4 and abs(datamodule.train_images.std().item() - 1) < 1e-3
    # A fresh module reads the cache; an explicit value still wins; MNIST keeps its constants.
    assert MNISTDataModule(data_dir=tmp_path, dataset="KMNIST").mean == datamodule.mean
    assert MNISTDataModule(data_dir=tmp_path, dataset="KMNIST", mean=0.5, std=0.25).mean == 0.5
    assert (MNISTDataModule().mean, MNISTDataModule().std) == (0.1307, 0.3081)


def test_missing_files_offline_are_named_by_the_dataset(tmp_path):
    for dataset, split, words in (
        ("FashionMNIST", "balanced", ["Fashion-MNIST is not in", "FashionMNIST/raw", "t10k-labels-idx1-ubyte.gz"]),
        ("EMNIST", "letters", ["EMNIST letters is not in", "gzip.zip", "emnist-letters-train-images-idx3-ubyte"]),
        ("QMNIST", "balanced", ["QMNIST is not in", "qmnist-train-labels-idx2-int.gz"]),
    ):
        datamodule = MNISTDataModule(data_dir=tmp_path, dataset=dataset, emnist_split=split, download=False)
        with pytest.raises(DataError) as error:
            datamodule.prepare_data()
        for word in [*words, "data.download=true"]:
            assert word in str(error.value), str(error.value)


def bad_fit(tmp_path: Path, capsys, *args: str) -> str:
    code, _, err = run_main("fit", "--config", str(tmp_path / "config.yaml"), *args, capsys=capsys)
    message = one_error_line(code, err)
    print(message)
    assert not list((tmp_path / "logs").rglob("version_*")), "a run folder was left behind"
    return message


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--data.dataset", "CIFAR10", ["data.dataset", "CIFAR10", "FashionMNIST"]),
        ("--data.emnist_split", "symbols", ["data.emnist_split", "symbols", "letters"]),
    ],
)
def test_an_unknown_dataset_or_split_is_one_error_line(option, value, words, tmp_path, capsys):
    write_config(tmp_path, "EMNIST", "letters", 26)
    message = bad_fit(tmp_path, capsys, option, value)
    for word in words:
        assert word in message, message


def test_another_datasets_files_under_this_name_are_one_error_line(tmp_path, capsys):
    # EMNIST letters' 26-class files copied over Fashion-MNIST's, where 10 classes are expected.
    write_dataset(tmp_path / "other", "EMNIST", "letters", num_train=260, num_test=52)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, split in (("train", "train"), ("t10k", "test")):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            shutil.copy(
                tmp_path / "other" / "EMNIST" / "raw" / f"emnist-letters-{split}-{kind}", raw / f"{prefix}-{kind}"
            )
    write_config(tmp_path, "FashionMNIST", "balanced", 10)
    message = bad_fit(tmp_path, capsys)
    for word in ["Fashion-MNIST", "train-labels-idx1-ubyte", "labels from 1 to 26", "10 classes", "another dataset"]:
        assert word in message, message


@pytest.mark.parametrize(("dataset", "split"), [("KMNIST", "balanced"), ("EMNIST", "letters"), ("QMNIST", "balanced")])
def test_images_and_labels_whose_counts_differ_are_one_error_line(dataset, split, tmp_path, capsys):
    written = write_dataset(tmp_path / "data", dataset, split, num_train=260, num_test=52)
    spec = MNISTDataModule(dataset=dataset, emnist_split=split).dataset
    labels_file = tmp_path / "data" / spec.name / "raw" / spec.files["train"][1]
    labels = written["train"][1][:200] + spec.first_label
    if spec.label_columns > 1:
        write_idx(labels_file, np.column_stack([labels, np.zeros((200, 7), dtype=int)]), type_code=0x0C)
    else:
        write_idx(labels_file, labels)
    write_config(tmp_path, dataset, split, spec.num_classes)
    message = bad_fit(tmp_path, capsys)
    for word in [spec.files["train"][0], "260 images", "200 labels", "data.download=true"]:
        assert word in message, message
