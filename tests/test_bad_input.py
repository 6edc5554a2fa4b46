"""Bad input of every kind: a non-zero exit, one clear error line naming the problem and the fix, no traceback,
and nothing half-written (no run folder, no CSV)."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_synthetic_mnist, run_cli, run_main
from PIL import Image

from lightning_cnn.data import MNISTDataModule
from lightning_cnn.errors import DataError
from lightning_cnn.models import BatchNormCNN, TwoConvNet


class Arbitrary:
    """A Python object in a checkpoint: weights-only loading must refuse to build it."""


def save_checkpoint(path: Path, network: torch.nn.Module, **extra: object) -> Path:
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in network.state_dict().items()}, **extra}, path)
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A synthetic dataset, a config using it (logs under ./logs), and bad files of every kind."""
    data_dir = make_synthetic_mnist(tmp_path / "data")
    config = {
        "model": {"backbone": {"class_path": "lightning_cnn.models.TwoConvNet"}},
        "data": {"data_dir": str(data_dir), "val_split": 100, "download": False},
        "trainer": {
            "max_steps": 1,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "bad"},
            },
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**config, "model": {**config["model"], "optimzer": "SGD"}}))
    good = save_checkpoint(tmp_path / "good.ckpt", TwoConvNet())
    (tmp_path / "truncated.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    save_checkpoint(tmp_path / "other.ckpt", BatchNormCNN(width=8))
    save_checkpoint(tmp_path / "unsafe.ckpt", TwoConvNet(), extra=Arbitrary())
    torch.save(TwoConvNet().state_dict(), tmp_path / "bare_state_dict.pt")
    (tmp_path / "broken_images").mkdir()
    (tmp_path / "broken_images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("L", (30, 30), 255).save(tmp_path / "broken_images" / "blank.png")
    (tmp_path / "empty_folder").mkdir()
    truncated_data = tmp_path / "truncated_data" / "MNIST" / "raw"
    shutil.copytree(data_dir / "MNIST" / "raw", truncated_data)
    images = truncated_data / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    return tmp_path


CFG = ("--config", "config.yaml")
# (arguments, exit status, words the error line must contain)
CASES = {
    "unknown config key": (("fit", "--config", "typo.yaml"), 2, ["optimzer"]),
    "unknown flag": (("fit", *CFG, "--trainer.epochs", "3"), 2, ["unrecognized", "trainer.epochs"]),
    "wrong type": (("fit", *CFG, "--data.batch_size", "many"), 2, ["data.batch_size=many", "an integer > 0"]),
    "out of range count": (("fit", *CFG, "--data.batch_size", "0"), 2, ["data.batch_size=0", "an integer > 0"]),
    "out of range fraction": (("fit", *CFG, "--data.val_split", "1.5"), 2, ["data.val_split"]),
    "out of range model option": (("fit", *CFG, "--model.label_smoothing", "1.5"), 1, ["label_smoothing", "[0, 1)"]),
    "missing config file": (("fit", "--config", "nope.yaml"), 2, ["nope.yaml", "does not exist"]),
    "unknown subcommand": (("train", *CFG), 2, ["train"]),
    "missing data folder": (("fit", *CFG, "--data.data_dir", "nowhere"), 1, ["MNIST is not in", "data.download=true"]),
    "data folder is a file": (("fit", *CFG, "--data.data_dir", "config.yaml"), 1, ["is a file", "data.data_dir"]),
    "truncated data file": (
        ("fit", *CFG, "--data.data_dir", "truncated_data"),
        1,
        ["train-images-idx3-ubyte", "truncated", "data.download=true"],
    ),
    "missing checkpoint": (("test", *CFG, "--ckpt_path", "missing.ckpt"), 1, ["does not exist"]),
    "no run for last": (("fit", *CFG, "--ckpt_path", "last"), 1, ["no run under", "checkpoints/last.ckpt"]),
    "truncated checkpoint": (("test", *CFG, "--ckpt_path", "truncated.ckpt"), 1, ["truncated or not a checkpoint"]),
    "text file as checkpoint": (("validate", *CFG, "--ckpt_path", "notes.ckpt"), 1, ["not a checkpoint"]),
    "bare state_dict": (("test", *CFG, "--ckpt_path", "bare_state_dict.pt"), 1, ["not a Lightning checkpoint"]),
    "other architecture": (("test", *CFG, "--ckpt_path", "other.ckpt"), 1, ["another architecture", "--config"]),
    "unsafe checkpoint": (("fit", *CFG, "--ckpt_path", "unsafe.ckpt"), 1, ["holds code", "not loaded"]),
    "export other architecture": (
        ("export", *CFG, "--ckpt_path", "other.ckpt", "--output_dir", "out"),
        1,
        ["another architecture"],
    ),
    "export truncated checkpoint": (
        ("export", *CFG, "--ckpt_path", "truncated.ckpt", "--output_dir", "out"),
        1,
        ["truncated"],
    ),
    "export without checkpoint": (("export", *CFG, "--output_dir", "out"), 2, ["ckpt_path"]),
    "predict path missing": (("predict", *CFG, "--data.predict_path", "nope/*.png"), 1, ["matches no", "quote"]),
    "predict empty folder": (("predict", *CFG, "--data.predict_path", "empty_folder"), 1, ["holds no image files"]),
    "predict unreadable images": (
        ("predict", *CFG, "--data.predict_path", "broken_images", "--predictions.output", "out/p.csv"),
        1,
        ["none of the 2 files", "PNG, JPEG, BMP, GIF, WebP or TIFF"],
    ),
    "trainer settings that conflict": (
        ("fit", *CFG, "--trainer.enable_checkpointing", "false", "--trainer.callbacks+=ModelCheckpoint"),
        1,
        ["enable_checkpointing=False", "ModelCheckpoint", "trainer.*"],
    ),
}
if not torch.cuda.is_available():
    CASES["GPU asked for, none present"] = (("fit", *CFG, "--trainer.accelerator", "gpu"), 1, ["gpu", "trainer.*"])


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clear_error(case, workspace, monkeypatch, capsys):
    args, status, words = CASES[case]
    monkeypatch.chdir(workspace)
    code, _, stderr = run_main(*args, capsys=capsys)
    assert code == status, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, stderr[-3000:]
    # jsonargparse puts the offending key on the line after "error:"; ours is one line.
    message = stderr[stderr.index(error_lines[0]) :]
    for word in words:
        assert word in message, message
    # Nothing half-written: no run folder with an empty event file, no export or CSV files.
    assert not (workspace / "logs").exists() or not any((workspace / "logs").rglob("version_*"))
    assert not (workspace / "out").exists() or not any((workspace / "out").iterdir())


def test_official_file_with_a_wrong_checksum_is_caught_and_repaired_from_its_archive(real_data_dir):
    module = MNISTDataModule(data_dir=real_data_dir, download=True)
    module.prepare_data()  # extracts the verified .gz archives (no network needed)
    labels = real_data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    damaged = bytearray(labels.read_bytes())
    damaged[5000] ^= 0xFF  # same size, header intact: only the checksum can tell
    labels.write_bytes(bytes(damaged))

    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: its MD5 checksum does not match"):
        MNISTDataModule(data_dir=real_data_dir, download=False).prepare_data()

    module.prepare_data()  # with download allowed: deleted and extracted again from the archive
    module.setup("test")
    assert labels.read_bytes() != bytes(damaged)
    assert module.test_labels.shape == (10000,)


def test_fit_without_checkpoints_trains_and_writes_none(workspace):
    result = run_cli("fit", *CFG, "--trainer.enable_checkpointing", "false", cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((workspace / "logs" / "bad").glob("version_*"))
    assert len(runs) == 1 and list(runs[0].glob("events.out.tfevents.*"))
    assert not list((workspace / "logs").rglob("*.ckpt"))
