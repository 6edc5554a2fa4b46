"""Data files that do not belong together (swapped, copied over one another) stop fit with one line, before anything
is written."""

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import make_synthetic_mnist, run_main

from lightning_cnn.data import MNISTDataModule
from lightning_cnn.errors import DataError

RAW = "MNIST/raw"
# (file copied, file it replaces, words the error must contain)
SWAPS = {
    "test labels over train labels": (
        "t10k-labels-idx1-ubyte",
        "train-labels-idx1-ubyte",
        ["500 images", "200 labels"],
    ),
    "test images over train images": (
        "t10k-images-idx3-ubyte",
        "train-images-idx3-ubyte",
        ["200 images", "500 labels"],
    ),
    "images over labels": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", ["one label per image"]),
    "labels over images": ("train-labels-idx1-ubyte", "train-images-idx3-ubyte", ["28x28", "labels file"]),
    "test images over test labels": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", ["one label per image"]),
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_synthetic_mnist(tmp_path / "data", num_train=500, num_test=200)


@pytest.mark.parametrize("swap", SWAPS)
def test_swapped_files_stop_fit_with_one_line_and_no_run_folder(swap, data_dir, tmp_path, capsys):
    source, target, words = SWAPS[swap]
    shutil.copy(data_dir / RAW / source, data_dir / RAW / target)
    config = {
        "model": {"backbone": {"class_path": "lightning_cnn.models.TwoConvNet"}},
        "data": {"data_dir": str(data_dir), "val_split": 100, "download": False},
        "trainer": {
            "max_steps": 1,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "swap"},
            },
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    subcommand = "test" if source.startswith("t10k") and target.startswith("t10k") else "fit"
    code, _, err = run_main(subcommand, "--config", str(tmp_path / "config.yaml"), capsys=capsys)
    assert code == 1, err[-3000:]
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err[-3000:]
    for word in [target, "data.download=true", *words]:
        assert word in error_lines[0], error_lines[0]
    assert not list((tmp_path / "logs").rglob("version_*"))


@pytest.mark.parametrize("swap", SWAPS)
def test_the_data_module_refuses_swapped_files_before_parsing(swap, data_dir):
    source, target, _ = SWAPS[swap]
    module = MNISTDataModule(data_dir=data_dir, download=False, val_split=100)
    module.check_raw_files()  # sound files pass
    shutil.copy(data_dir / RAW / source, data_dir / RAW / target)
    with pytest.raises(DataError, match=target):
        module.check_raw_files()
