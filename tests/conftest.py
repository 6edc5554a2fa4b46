"""Shared fixtures: tiny MNIST-format datasets written as real IDX files, and the official files when present."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_cnn.data import ImageDataModule

REPO = Path(__file__).resolve().parents[1]
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format that torchvision's MNIST parser reads."""
    type_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def synthetic_digits(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 images: label k lights a 6x6 patch at a position that depends on k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(num, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 3 + 8 * (label // 4), 2 + 6 * (label % 4)
        images[i, row : row + 6, col : col + 6] = 255
    return images, labels.astype(np.uint8)


def make_synthetic_mnist(root: Path, num_train: int = 600, num_test: int = 200) -> Path:
    """Write ``root/MNIST/raw`` with uncompressed IDX files (torchvision then skips download and MD5)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, num, seed in (("train", num_train, 0), ("t10k", num_test, 1)):
        images, labels = synthetic_digits(num, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def synthetic_data_dir(tmp_path: Path) -> Path:
    """A data_dir holding a tiny synthetic MNIST (600 train, 200 test images)."""
    return make_synthetic_mnist(tmp_path / "data")


def official_raw_dir() -> Path | None:
    """Where the four official MNIST archives are, if anywhere: $MNIST_RAW_DIR, data/, or ../shared/data/."""
    candidates = [
        os.environ.get("MNIST_RAW_DIR"),
        REPO / "data" / "MNIST" / "raw",
        REPO.parent / "shared" / "data" / "MNIST" / "raw",
    ]
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_file() for name in MNIST_FILES):
            return Path(candidate)
    return None


@pytest.fixture
def real_data_dir(tmp_path: Path) -> Path:
    """A fresh data_dir with copies of the official .gz archives, so the real verify-and-extract path runs."""
    source = official_raw_dir()
    if source is None:
        message = "the official MNIST .gz files are not in data/MNIST/raw (see README: Data and offline use)"
        if os.environ.get("LIGHTNING_CNN_REQUIRE_MNIST") == "1":
            pytest.fail(message)
        pytest.skip(message)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(source / name, raw / name)
    return tmp_path / "data"


def run_cli(
    *args: str, cwd: Path, timeout: float = 600, env: dict | None = None, subprocess_: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m lightning_cnn`` as a user would, with its exit status, stdout and stderr.

    In this process by default (a Python start costs seconds of imports); ``subprocess_=True`` starts
    a real process, for the tests where the process boundary is the point.
    """
    if subprocess_:
        full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "lightning_cnn", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )
    return _run_in_process(list(args), cwd, env or {})


def _run_in_process(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    from lightning_cnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    # Lightning's console messages go through logging handlers that hold the stream they were made with.
    handlers = [
        handler
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if type(handler) is logging.StreamHandler
    ]
    streams = [handler.setStream(err) for handler in handlers]
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    argv, previous_dir, sigint_handler = sys.argv, os.getcwd(), signal.getsignal(signal.SIGINT)
    sys.argv = ["lightning_cnn", *args]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore does for a real process
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception:  # what a real process would print before exiting with 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous_dir)
        sys.argv = argv
        signal.signal(signal.SIGINT, sigint_handler)
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["lightning_cnn", *args], code, out.getvalue(), err.getvalue())


def config_run_args(
    config: str, data_dir: Path, save_dir: Path, *extra: str, name: str | None = None, train_batches: int = 3
) -> list[str]:
    """The arguments of a short run of ``configs/<config>`` on a tiny dataset: a few training batches,
    100 validation images, logged under ``save_dir`` (as experiment ``name``, else the config's own)."""
    return [
        "--config", str(REPO / "configs" / config),
        "--data.data_dir", str(data_dir),
        "--data.val_split", "100",
        "--trainer.logger.init_args.save_dir", str(save_dir),
        *(("--trainer.logger.init_args.name", name) if name else ()),
        "--trainer.limit_train_batches", str(train_batches),
        "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip


def read_events(run_dir: Path) -> EventAccumulator:
    """Every scalar, image and tensor a run folder's TensorBoard event files hold, read back by TensorBoard's reader."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def logged(run_dir: Path, tag: str) -> list[float]:
    """The values of one scalar tag, in logged order ([] when the run never logged it)."""
    events = read_events(run_dir)
    return [event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for a DDP rendezvous or a server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_main(*args: str, capsys: pytest.CaptureFixture | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process, as ``python -m lightning_cnn`` would; returns (exit status, stdout, stderr).

    A Python start costs seconds of imports, so tests that need no process boundary run here.
    """
    from lightning_cnn.cli import main

    code, argv, sigint_handler = 0, sys.argv, signal.getsignal(signal.SIGINT)
    sys.argv = ["lightning_cnn", *args]  # where LightningCLI looks, as for a real command line
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
        signal.signal(signal.SIGINT, sigint_handler)  # a stopped fit leaves Ctrl+C ignored, as a process exits
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class SignalAtStep(Callback):
    """Sends ``signum`` to this process once ``global_step`` reaches ``step``: a user's Ctrl+C or a scheduler's
    SIGTERM, at a step the test chooses; with ``again_after``, the same signal once more that many seconds later."""

    timers: list[threading.Timer] = []

    def __init__(self, step: int, signum: int = 15, again_after: float | None = None) -> None:
        self.step, self.signum, self.again_after = step, signum, again_after

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
            if self.again_after is not None:
                timer = threading.Timer(self.again_after, os.kill, (os.getpid(), self.signum))
                type(self).timers.append(timer)
                timer.start()

    @classmethod
    def join_timers(cls) -> None:
        while cls.timers:
            cls.timers.pop().join()


class SignalDuringSave(Callback):
    """Sends SIGINT while the checkpoint of a stop is being written: a second Ctrl+C at the worst moment."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: ANN001
        if trainer.received_sigterm:
            os.kill(os.getpid(), signal.SIGINT)


class ToyShapes(ImageDataModule):
    """A dataset of another shape through the data contract alone: 3 classes of 2x12x12 images, a bright
    quadrant per class. Used as ``--data.class_path conftest.ToyShapes``."""

    num_classes = 3
    image_shape = (2, 12, 12)

    def __init__(self, batch_size: PositiveInt = 16, size: PositiveInt = 96) -> None:
        super().__init__()
        self.batch_size, self.size = batch_size, size

    def setup(self, stage: str) -> None:
        generator = torch.Generator().manual_seed(0)
        labels = torch.arange(self.size) % self.num_classes
        images = torch.rand(self.size, *self.image_shape, generator=generator) * 0.2
        for label in range(self.num_classes):
            images[
                labels == label, :, (label // 2) * 6 : (label // 2) * 6 + 6, (label % 2) * 6 : (label % 2) * 6 + 6
            ] = 1
        self.images, self.labels = (images - 0.5) / 0.5, labels
        self.mean, self.std = 0.5, 0.5
        self.predict_names = [f"toy[{i}]" for i in range(self.size)]

    def _loader(self, shuffle: bool = False) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(self.images, self.labels), batch_size=self.batch_size, shuffle=shuffle
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader()

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader()

    @property
    def class_names(self) -> list[str]:
        return ["top-left", "top-right", "bottom-left"]
