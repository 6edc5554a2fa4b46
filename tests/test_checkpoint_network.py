"""``fit --ckpt_path`` trains the configured network: a checkpoint of another one is refused, never swapped in."""

from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_synthetic_mnist, run_main


def write_config(root: Path, name: str, backbone: str, optimizer: str) -> Path:
    config = {
        "seed_everything": 0,
        "model": {"backbone": {"class_path": backbone}, "optimizer": {"class_path": optimizer}},
        "data": {"data_dir": str(root / "data"), "batch_size": 50, "val_split": 100, "download": False},
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root / "logs"), "name": name},
            },
        },
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A KerasConvNet checkpoint (RMSprop) and a TwoConvNet one (Adam), each from a real fit."""
    root = tmp_path_factory.mktemp("networks")
    make_synthetic_mnist(root / "data")
    checkpoints = {}
    for name, backbone, optimizer in (
        ("keras", "lightning_cnn.models.KerasConvNet", "torch.optim.RMSprop"),
        ("two_conv", "lightning_cnn.models.TwoConvNet", "torch.optim.Adam"),
    ):
        config = write_config(root, name, backbone, optimizer)
        assert run_main("fit", "--config", str(config))[0] == 0
        checkpoints[name] = root / "logs" / name / "version_0" / "checkpoints" / "last.ckpt"
    return {"root": root, **checkpoints}


def runs_of(root: Path, name: str) -> list[str]:
    return sorted(p.name for p in (root / "logs" / name).iterdir()) if (root / "logs" / name).exists() else []


def test_fit_with_another_networks_checkpoint_stops_with_one_line(trained, capsys):
    root = trained["root"]
    config = write_config(root, "two_conv", "lightning_cnn.models.TwoConvNet", "torch.optim.Adam")
    before = runs_of(root, "two_conv")
    code, _, err = run_main("fit", "--config", str(config), "--ckpt_path", str(trained["keras"]), capsys=capsys)
    assert code == 1, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "another architecture" in error_lines[0] and "KerasConvNet" in error_lines[0]
    assert runs_of(root, "two_conv") == before  # no new run folder


def test_a_backbone_given_on_the_command_line_wins_over_the_checkpoint(trained, capsys):
    root = trained["root"]
    config = write_config(root, "two_conv", "lightning_cnn.models.TwoConvNet", "torch.optim.Adam")
    code, _, err = run_main(
        "fit",
        *("--config", str(config), "--ckpt_path", str(trained["two_conv"])),
        *("--model.backbone", "lightning_cnn.models.BatchNormCNN"),
        capsys=capsys,
    )
    assert code == 1, err[-3000:]
    assert "another architecture" in err and "TwoConvNet" in err


def test_resumed_fit_keeps_the_configured_recipe(trained, capsys):
    root = trained["root"]
    config = write_config(root, "two_conv", "lightning_cnn.models.TwoConvNet", "torch.optim.Adam")
    code, _, err = run_main(
        "fit", "--config", str(config), "--ckpt_path", str(trained["two_conv"]), "--trainer.max_epochs", "2"
    )
    assert code == 0, err[-3000:]
    saved = yaml.safe_load((trained["two_conv"].parent.parent / "config.yaml").read_text())
    assert saved["model"]["backbone"]["class_path"] == "lightning_cnn.models.TwoConvNet"
    assert saved["model"]["optimizer"]["class_path"] == "torch.optim.Adam"


def test_test_still_rebuilds_the_network_from_the_checkpoint(trained, capsys):
    root = trained["root"]
    config = write_config(root, "two_conv", "lightning_cnn.models.TwoConvNet", "torch.optim.Adam")
    code, out, err = run_main("test", "--config", str(config), "--ckpt_path", str(trained["keras"]), capsys=capsys)
    assert code == 0, err[-3000:]
    assert "test/acc" in out


def test_a_checkpoint_with_the_former_positional_layer_names_still_tests(trained, capsys):
    root = trained["root"]
    checkpoint = torch.load(trained["two_conv"], weights_only=True)
    names = ["conv1", "pool1", "relu1", "conv2", "dropout", "pool2", "relu2", "flatten", "fc"]
    checkpoint["state_dict"] = {
        key.replace(f"backbone.{name}.", f"backbone.{names.index(name)}.")
        if key.startswith("backbone.")
        else key: value
        for key, value in checkpoint["state_dict"].items()
        for name in [key.split(".")[1]]
    }
    assert "backbone.0.weight" in checkpoint["state_dict"]
    old = root / "positional.ckpt"
    torch.save(checkpoint, old)
    config = write_config(root, "two_conv", "lightning_cnn.models.TwoConvNet", "torch.optim.Adam")
    code, out, err = run_main("test", "--config", str(config), "--ckpt_path", str(old), capsys=capsys)
    assert code == 0, err[-3000:]
    assert "test/acc" in out
