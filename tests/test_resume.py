"""Stopping and resuming fit: SIGINT/SIGTERM leave a usable last.ckpt; resumed training equals uninterrupted."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SignalAtStep, make_synthetic_mnist, run_cli, run_main

from lightning_cnn.runs.record import read_record

MAX_EPOCHS = 4
STEPS_PER_EPOCH = 25  # 500 training images in batches of 20


def write_config(root: Path, data_dir: Path) -> Path:
    """A deterministic experiment with dropout (so the random state matters) logging under ``root/logs``."""
    config = {
        "seed_everything": 0,
        "model": {
            "backbone": {"class_path": "lightning_cnn.models.TwoConvNet"},
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.5}},
        },
        "data": {"data_dir": str(data_dir), "batch_size": 20, "val_split": 100},
        "trainer": {
            "max_epochs": MAX_EPOCHS,
            "accelerator": "cpu",
            "devices": 1,
            "deterministic": True,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root / "logs"), "name": "resume"},
            },
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("fit", "--config", str(root / "config.yaml"), *args, cwd=root)


def last_checkpoint(root: Path) -> dict:
    return torch.load(root / "logs" / "resume" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs by {(a[key] - b[key]).abs().max()}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The final checkpoint of a run trained for MAX_EPOCHS epochs without a stop."""
    root = tmp_path_factory.mktemp("uninterrupted")
    write_config(root, make_synthetic_mnist(root / "data"))
    result = fit(root)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = last_checkpoint(root)
    assert checkpoint["global_step"] == MAX_EPOCHS * STEPS_PER_EPOCH
    return checkpoint


def test_resume_at_an_epoch_boundary_gives_the_same_weights(uninterrupted, tmp_path):
    write_config(tmp_path, make_synthetic_mnist(tmp_path / "data"))
    first = fit(tmp_path, "--trainer.max_epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert last_checkpoint(tmp_path)["global_step"] == 2 * STEPS_PER_EPOCH  # last.ckpt is current, not the best

    resumed = fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "logs" / "resume").iterdir())
    assert runs == ["version_0"]  # the same run folder, no new version
    checkpoint = last_checkpoint(tmp_path)
    assert checkpoint["global_step"] == MAX_EPOCHS * STEPS_PER_EPOCH  # the step count continued
    assert_same_weights(checkpoint["state_dict"], uninterrupted["state_dict"])


def interrupt(root: Path, signum: signal.Signals, again_after: float | None = None) -> subprocess.CompletedProcess:
    """Start fit, send ``signum`` as soon as a first last.ckpt exists, and wait for the exit.

    last.ckpt is also written every 5 steps here, so the first one appears inside the first epoch
    and the signal lands mid-epoch (wherever it lands, resuming must give the same weights).
    """
    command = [
        *(sys.executable, "-m", "lightning_cnn", "fit", "--config", str(root / "config.yaml")),
        *("--last_checkpoint.every_n_train_steps", "5"),
    ]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = root / "logs" / "resume" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    if again_after is not None:
        time.sleep(again_after)
        if process.poll() is None:
            process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_sigterm_mid_run_saves_last_and_resume_gives_the_same_weights(uninterrupted, tmp_path):
    write_config(tmp_path, make_synthetic_mnist(tmp_path / "data"))
    stopped = interrupt(tmp_path, signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "SIGTERM: saved" in stopped.stderr and "--ckpt_path last" in stopped.stderr
    saved = last_checkpoint(tmp_path)
    assert 5 <= saved["global_step"] < MAX_EPOCHS * STEPS_PER_EPOCH  # stopped during training

    resumed = fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if saved["global_step"] % STEPS_PER_EPOCH:
        assert "not resumable" not in resumed.stderr  # the loader skips the batches already trained on
    assert sorted(p.name for p in (tmp_path / "logs" / "resume").iterdir()) == ["version_0"]
    checkpoint = last_checkpoint(tmp_path)
    assert checkpoint["global_step"] == MAX_EPOCHS * STEPS_PER_EPOCH
    assert_same_weights(checkpoint["state_dict"], uninterrupted["state_dict"])


def test_sigint_stops_after_the_current_batch_and_saves_last(tmp_path):
    write_config(tmp_path, make_synthetic_mnist(tmp_path / "data"))
    stopped = interrupt(tmp_path, signal.SIGINT)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "SIGINT: saved" in stopped.stderr
    saved = last_checkpoint(tmp_path)
    assert 5 <= saved["global_step"] < MAX_EPOCHS * STEPS_PER_EPOCH
    assert all(torch.isfinite(value).all() for value in saved["state_dict"].values())
    assert "rng_states" in saved  # restored on resume: same dropout masks as an uninterrupted run


# Every scheduler shape the configs use: none, stepped per epoch, one-cycle stepped per optimizer step.
# One-cycle reads trainer.estimated_stepping_batches, which builds the train loader before the
# checkpoint is restored: the loader must still skip the batches already trained on.
SCHEDULERS = {
    "none": {"scheduler": None},
    "epoch step_lr": {
        "scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}},
        "scheduler_interval": "epoch",
    },
    "step one_cycle": {
        "scheduler": {"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.05}},
        "scheduler_interval": "step",
    },
}


def write_scheduled_config(root: Path, scheduler: str) -> Path:
    path = write_config(root, make_synthetic_mnist(root / "data"))
    config = yaml.safe_load(path.read_text())
    config["model"].update(SCHEDULERS[scheduler])
    path.write_text(yaml.safe_dump(config))
    return path


# A first Ctrl+C takes SIGTERM's path (stop after the batch); one scheduler shows it.
STOPS = [*((name, signal.SIGTERM) for name in SCHEDULERS), ("step one_cycle", signal.SIGINT)]


@pytest.mark.parametrize(("scheduler", "signum"), STOPS)
def test_resume_inside_an_epoch_gives_the_same_weights_with_every_scheduler(scheduler, signum, tmp_path, capsys):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for root in (straight, stopped):
        root.mkdir()
        write_scheduled_config(root, scheduler)
    config = lambda root: ("--config", str(root / "config.yaml"))  # noqa: E731

    assert run_main("fit", *config(straight), capsys=capsys)[0] == 0
    stop_at = STEPS_PER_EPOCH + 12  # inside the second epoch
    callback = {"class_path": "conftest.SignalAtStep", "init_args": {"step": stop_at, "signum": int(signum)}}
    code, _, err = run_main("fit", *config(stopped), f"--trainer.callbacks+={json.dumps(callback)}", capsys=capsys)
    assert code == 128 + signum, err[-3000:]
    assert last_checkpoint(stopped)["global_step"] == stop_at
    record = read_record(stopped / "logs" / "resume" / "version_0")
    assert (record["status"], record["epochs"], record["checkpoints"]["last"]) == (
        "stopped",
        1,
        "checkpoints/last.ckpt",
    )

    code, _, err = run_main("fit", *config(stopped), "--ckpt_path", "last", capsys=capsys)
    assert code == 0, err[-3000:]
    resumed, reference = last_checkpoint(stopped), last_checkpoint(straight)
    assert resumed["global_step"] == reference["global_step"] == MAX_EPOCHS * STEPS_PER_EPOCH
    assert_same_weights(resumed["state_dict"], reference["state_dict"])
    assert resumed["lr_schedulers"] == reference["lr_schedulers"]
    # The run record continues too: every epoch once, and the same validation numbers as the straight run.
    # (The training metrics of the interrupted epoch count only the batches trained after the resume.)
    record = read_record(stopped / "logs" / "resume" / "version_0")
    straight_record = read_record(straight / "logs" / "resume" / "version_0")
    assert record["status"] == straight_record["status"] == "finished"
    assert record["epochs"] == straight_record["epochs"] == MAX_EPOCHS
    for tag in ("val/acc", "val/loss", "val/acc_best"):
        assert record["curves"][tag] == straight_record["curves"][tag], tag
    assert [epoch for epoch, _ in record["curves"]["train/loss"]] == list(range(1, MAX_EPOCHS + 1))
    assert record["best"] == straight_record["best"]
    # Both sessions count in the training time: the stopped one as well as the one that finished.
    assert len(record["fit_sessions"]) == 2 and all(seconds > 0 for seconds in record["fit_sessions"])
    assert record["train_seconds"] == pytest.approx(sum(record["fit_sessions"]))


def second_ctrl_c(root: Path, capsys, delay: float | None) -> tuple[int, str]:  # noqa: ANN001
    """fit stopped by a Ctrl+C at step 30 and a second one ``delay`` seconds later (None: while the save is written)."""
    first = {"step": 30, "signum": int(signal.SIGINT), "again_after": delay}
    callbacks = [{"class_path": "conftest.SignalAtStep", "init_args": first}]
    if delay is None:
        callbacks.append({"class_path": "conftest.SignalDuringSave"})
    # A second signal that lands after fit has finished must not reach pytest.
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        code, _, err = run_main(
            "fit",
            *("--config", str(root / "config.yaml")),
            *(f"--trainer.callbacks+={json.dumps(callback)}" for callback in callbacks),
            capsys=capsys,
        )
        SignalAtStep.join_timers()
    finally:
        signal.signal(signal.SIGINT, previous)
    return code, err


@pytest.mark.parametrize("delay", [None, 0.0, 0.002, 0.01, 0.05, 0.1, 0.3])
def test_a_second_ctrl_c_at_any_moment_still_saves_a_whole_checkpoint(delay, tmp_path, capsys):
    write_config(tmp_path, make_synthetic_mnist(tmp_path / "data"))
    code, err = second_ctrl_c(tmp_path, capsys, delay)
    assert code == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err
    saved = last_checkpoint(tmp_path)  # written whole: it loads
    assert 30 <= saved["global_step"] < MAX_EPOCHS * STEPS_PER_EPOCH
    assert all(torch.isfinite(value).all() for value in saved["state_dict"].values())
    assert not list((tmp_path / "logs").rglob("*.tmp"))


def test_two_ctrl_c_50_ms_apart_exit_130_with_last_saved(tmp_path):
    write_config(tmp_path, make_synthetic_mnist(tmp_path / "data"))
    stopped = interrupt(tmp_path, signal.SIGINT, again_after=0.05)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    saved = last_checkpoint(tmp_path)
    assert 5 <= saved["global_step"] < MAX_EPOCHS * STEPS_PER_EPOCH
    resumed = fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
