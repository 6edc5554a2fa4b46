"""Settings that cannot train stop with one line before any run folder exists."""

from pathlib import Path

import pytest
import yaml
from conftest import make_synthetic_mnist, run_main

ONE_CYCLE = {"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.01}}
PLATEAU = {"class_path": "torch.optim.lr_scheduler.ReduceLROnPlateau"}
# (extra arguments, scheduler in the config, words the error line must contain)
CASES = {
    "backbone without parameters": (["--model.backbone", "torch.nn.Identity"], None, ["Identity", "no trainable"]),
    "wrong number of logits": (["--model.backbone.init_args.num_classes", "3"], None, ["(3,)", "10 classes"]),
    "negative learning rate": (["--model.optimizer.init_args.lr", "-0.1"], None, ["model.optimizer", "-0.1"]),
    "zero learning rate": (["--model.optimizer.init_args.lr", "0"], None, ["model.optimizer", "positive"]),
    "negative max_lr": (["--model.scheduler.init_args.max_lr", "-0.1"], ONE_CYCLE, ["max_lr", "-0.1", "positive"]),
    "plateau without validation": (["--data.val_split", "0"], PLATEAU, ["ReduceLROnPlateau", "data.val_split=0"]),
    "validation split too large": (["--data.val_split", "600"], None, ["data.val_split=600", "600"]),
}


def write_config(root: Path, scheduler: dict | None) -> Path:
    model = {
        "backbone": {"class_path": "lightning_cnn.models.TwoConvNet"},
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    }
    if scheduler is not None:
        model.update(scheduler=scheduler, scheduler_interval="step")
    config = {
        "model": model,
        "data": {"data_dir": str(make_synthetic_mnist(root / "data")), "val_split": 100, "download": False},
        "trainer": {
            "max_steps": 1,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root / "logs"), "name": "settings"},
            },
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("case", CASES)
def test_settings_that_cannot_train_stop_before_a_run_folder_exists(case, tmp_path, capsys):
    extra, scheduler, words = CASES[case]
    config = write_config(tmp_path, scheduler)
    code, _, err = run_main("fit", "--config", str(config), *extra, capsys=capsys)
    assert code == 1, err[-3000:]
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err[-3000:]
    for word in words:
        assert word in error_lines[0], error_lines[0]
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("version_*"))
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_the_same_config_with_sound_settings_trains(tmp_path, capsys):
    config = write_config(tmp_path, ONE_CYCLE)
    code, _, err = run_main("fit", "--config", str(config), capsys=capsys)
    assert code == 0, err[-3000:]
    assert list((tmp_path / "logs" / "settings").glob("version_0/checkpoints/last.ckpt"))
