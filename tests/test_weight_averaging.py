"""ema.decay and swa.start_epoch: the averaged weights are validated, saved, tested, exported, predicted with and
kept across a resume."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import config_run_args, run_main
from lightning.pytorch.callbacks import Callback
from torchvision.datasets import MNIST

from lightning_cnn.models import TwoConvNet

EMA = ("--ema.decay", "0.9")
SWA = ("--swa.start_epoch", "2")


class RecordWeights(Callback):
    """Keeps the backbone's raw weights after every optimizer step, and the first ones."""

    steps: list[dict] = []
    initial: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        type(self).steps = []
        type(self).initial = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        type(self).steps.append({k: v.clone() for k, v in pl_module.backbone.state_dict().items()})


RECORD = "--trainer.callbacks+=" + json.dumps({"class_path": "test_weight_averaging.RecordWeights"})


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
    assert checkpoint["weights"] == {"kind": "ema", "decay": 0.9, "start_step": 0, "updates": 6}
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


@pytest.mark.parametrize("averaging", [EMA, SWA], ids=["ema", "swa"])
def test_a_resumed_fit_keeps_the_average(averaging, synthetic_data_dir, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    arguments = lambda logs: config_run_args(  # noqa: E731
        "quickstart.yaml", synthetic_data_dir, logs, "--trainer.max_epochs", "2", *averaging
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


def test_swa_saves_the_equal_mean_of_the_steps_from_its_start_epoch(synthetic_data_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    args = config_run_args("quickstart.yaml", synthetic_data_dir, logs, "--trainer.max_epochs", "3", *SWA)
    # Every epoch's checkpoint is kept (save_top_k -1), to read the first one.
    assert run_main("fit", *args, RECORD, "--checkpoint.save_top_k", "-1", capsys=capsys)[0] == 0
    checkpoint = last(logs)
    steps = RecordWeights.steps
    assert len(steps) == 9  # 3 epochs of 3 batches; epochs 2 and 3 are averaged
    assert checkpoint["weights"] == {"kind": "swa", "start_epoch": 2, "updates": 6}
    averaged = backbone_of(checkpoint["state_dict"])
    for key, value in averaged.items():
        expected = torch.stack([step[key] for step in steps[3:]]).mean(dim=0)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=key)
    assert torch.equal(backbone_of(checkpoint["current_model_state"])["fc.weight"], steps[-1]["fc.weight"])
    # The first epoch's best checkpoint came before any average: it holds the raw weights, and says so.
    first = torch.load(
        next((logs / "quickstart" / "version_0" / "checkpoints").glob("best-epoch00*")), weights_only=True
    )
    assert first["weights"] == {"kind": "raw"}
    assert torch.equal(backbone_of(first["state_dict"])["fc.weight"], steps[2]["fc.weight"])


def test_before_its_first_update_the_average_is_not_used(synthetic_data_dir, tmp_path, capsys):
    # Lightning's average starts as a copy of the untrained network; before ema.start_step it must not be
    # validated, saved or kept at the end of training in place of the weights trained so far.
    logs = tmp_path / "logs"
    args = config_run_args("quickstart.yaml", synthetic_data_dir, logs, "--trainer.max_epochs", "2", *EMA)
    code, out, err = run_main("fit", *args, "--ema.start_step", "100", RECORD, capsys=capsys)
    assert code == 0, err[-3000:]
    checkpoint = last(logs)
    assert checkpoint["weights"] == {"kind": "raw"}
    saved = backbone_of(checkpoint["state_dict"])
    for key, value in RecordWeights.steps[-1].items():
        assert torch.equal(saved[key], value), key
    assert not torch.equal(saved["fc.weight"], RecordWeights.initial["fc.weight"])
    record = json.loads((logs / "quickstart" / "version_0" / "summary.json").read_text())
    assert record["best"]["val/acc"] > 0.5  # validated on the trained weights, not on the initial ones


def test_predict_uses_the_average(synthetic_data_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    args = config_run_args("quickstart.yaml", synthetic_data_dir, logs, "--trainer.max_epochs", "2", *EMA)
    assert run_main("fit", *args, capsys=capsys)[0] == 0
    output = tmp_path / "predictions.csv"
    code, _, err = run_main("predict", *args, "--ckpt_path", "last", "--predictions.output", str(output), capsys=capsys)
    assert code == 0, err[-3000:]
    network = TwoConvNet()
    network.load_state_dict(backbone_of(last(logs)["state_dict"]))
    network.eval()
    test = MNIST(synthetic_data_dir, train=False)
    with torch.no_grad():
        expected = network((test.data.float().unsqueeze(1) / 255 - 0.1307) / 0.3081).softmax(dim=1)
    with output.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(test)
    predicted = torch.tensor([[float(row[f"probability_{k}"]) for k in range(10)] for row in rows])
    torch.testing.assert_close(predicted, expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ((*EMA, *SWA), "error: ema.decay and swa.start_epoch both average the weights"),
        (("--swa.start_epoch", "5"), "error: swa.start_epoch=5 comes after the last epoch (trainer.max_epochs=2)"),
    ],
)
def test_averaging_that_cannot_work_is_one_line_and_no_run(settings, message, synthetic_data_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    args = config_run_args("quickstart.yaml", synthetic_data_dir, logs, "--trainer.max_epochs", "2", *settings)
    code, _, err = run_main("fit", *args, capsys=capsys)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith(message)
    assert not list(logs.rglob("version_*"))
