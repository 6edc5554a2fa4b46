"""The real dashboard: a TensorBoard server over a tiny run serves the runs, tags and hparams that were logged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import config_run_args, free_port, make_synthetic_mnist, read_events, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

RUN = "quickstart/version_0"
STARTUP_SECONDS = 90


def fetch(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def log_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard")
    data_dir = make_synthetic_mnist(root / "data")
    args = config_run_args(
        "quickstart.yaml", data_dir, root / "logs", "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1"
    )
    result = run_cli("fit", *args, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "logs"


@pytest.fixture(scope="module")
def dashboard(log_root) -> Iterator[str]:
    """``tensorboard --logdir`` on a free loopback port; yields its base URL once it lists the run, then stops it."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_root), "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"tensorboard exited with {server.returncode}: {server.stdout.read()[-2000:]}")
            try:
                # The server answers before its first scan of the log folder ends: wait for the run.
                if RUN in fetch(f"{url}/data/runs"):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not list {RUN} within {STARTUP_SECONDS} s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()


def logged_events(log_root: Path) -> EventAccumulator:
    return read_events(log_root / RUN)


def test_dashboard_lists_the_run_and_its_scalar_tags(dashboard, log_root):
    assert fetch(f"{dashboard}/data/runs") == [RUN]
    served = fetch(f"{dashboard}/data/plugin/scalars/tags")
    assert set(served) == {RUN}
    logged = set(logged_events(log_root).Tags()["scalars"])
    assert set(served[RUN]) == logged
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "train/lr-Adam"} <= logged


def test_dashboard_serves_the_logged_values_and_images(dashboard, log_root):
    events = logged_events(log_root)
    served = fetch(f"{dashboard}/data/plugin/scalars/scalars?run={RUN}&tag=val/acc")
    assert [(step, value) for _, step, value in served] == [(e.step, e.value) for e in events.Scalars("val/acc")]
    images = fetch(f"{dashboard}/data/plugin/images/tags")[RUN]
    assert set(images) == set(events.Tags()["images"])
    assert all(info["samples"] == 1 for info in images.values())  # one epoch: one image per kind


def test_dashboard_hparams_tab_shows_the_run_with_its_best_validation_accuracy(dashboard, log_root):
    experiment = fetch(f"{dashboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"architecture", "parameters", "optimizer", "lr", "batch_size", "augmentation"} <= names
    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [
            {"hparam": "architecture", "includeInResult": True},
            {"hparam": "parameters", "includeInResult": True},
            {"metric": {"group": "", "tag": "val/acc_best"}, "includeInResult": True},
        ],
        "startIndex": 0,
        "sliceSize": 10,
    }
    (group,) = fetch(f"{dashboard}/data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert group["hparams"]["architecture"] == "TwoConvNet" and group["hparams"]["parameters"] == 8490
    (metric,) = [m for m in group["metricValues"] if m["name"]["tag"] == "val/acc_best"]
    assert metric["value"] == pytest.approx(logged_events(log_root).Scalars("val/acc_best")[-1].value)
