"""ema.decay: the averaged weights are validated, saved, tested, exported and kept across a resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import config_run_args, run_main
from torchvision.datasets import MNIST

from lightning_cnn.models import TwoConvNet

EMA = ("--ema.decay", "0.9")


def last(logs: Path) -> dict:
    return torch.load(logs / "quickstart" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def backbone_of(state: dict) -> dict:
    return {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}


def test_accuracy(weights: dict, data_dir: Path) -> float:
    """Accuracy on the test file with these weights, computed without Lightning or the DataModule."""
    network = TwoConvNet()
    network.load_state_dict(weights)
    network.eval()
    test = MNIST(data_dir, train=False)
    with torch.no_grad():
        predictions = network((test.data.float().unsqueeze(1) / 255 - 0.1307) / 0.3081).argmax(dim=1)
    return (predictions == test.targets).float().mean().item()


test_accuracy.__test__ = False  # a helper, not a test


def test_the_checkpoint_holds_the_average_and_test_and_export_use_it(synthetic_data_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    args = config_run_args("quickstart.yaml", synthetic_data_dir, logs, "--trainer.max_epochs", "2", *EMA)
    assert run_main("fit", *args, capsys=capsys)[0] == 0
    checkpoint = last(logs)
    assert checkpoint["weights"] == {"kind": "ema", "decay": 0.9, "start_step": 0}
    averaged, raw = backbone_of(checkpoint["state_dict"]), backbone_of(checkpoint["current_model_state"])
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[key], raw[key]) for key in averaged)  # the average is not the last step

    code, out, err = run_main("test", *args, "--ckpt_path", "last", capsys=capsys)
    assert code == 0, err[-3000:]
    logged = float(next(line for line in out.splitlines() if "test/acc" in line).split("│")[2])
    assert logged == pytest.approx(test_accuracy(averaged, synthetic_data_dir), abs=1e-6)

    ckpt = logs / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    code, _, err = run_main(
        "export", *args, "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "export"), capsys=capsys
    )
    assert code == 0, err[-3000:]
    scripted = torch.jit.load(str(tmp_path / "export" / "model.pt"))
    exported = {key.removeprefix("backbone."): value for key, value in scripted.state_dict().items()}
    for key, value in averaged.items():
        assert torch.equal(exported[key], value), key


def test_a_resumed_fit_keeps_the_average(synthetic_data_dir, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    arguments = lambda logs: config_run_args(  # noqa: E731
        "quickstart.yaml", synthetic_data_dir, logs, "--trainer.max_epochs", "2", *EMA
    )
    assert run_main("fit", *arguments(straight), capsys=capsys)[0] == 0
    stop = {"class_path": "conftest.SignalAtStep", "init_args": {"step": 4, "signum": int(signal.SIGTERM)}}
    code, _, err = run_main("fit", *arguments(split), f"--trainer.callbacks+={json.dumps(stop)}", capsys=capsys)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert last(split)["global_step"] == 4  # stopped inside the second epoch
    assert run_main("fit", *arguments(split), "--ckpt_path", "last", capsys=capsys)[0] == 0
    resumed, reference = last(split), last(straight)
    for part in ("state_dict", "current_model_state"):
        for key, value in reference[part].items():
            assert torch.equal(resumed[part][key], value), f"{part}: {key}"
