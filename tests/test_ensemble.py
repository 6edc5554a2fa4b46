"""ensemble: the averaged softmax of several checkpoints on the test set, checked against an independent computation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import config_run_args, make_synthetic_mnist, read_events, run_main
from torchvision.datasets import MNIST

from lightning_cnn.models import TwoConvNet


def accuracies(out: str) -> list[float]:
    return [float(value) / 100 for value in re.findall(r"test acc ([\d.]+)%", out)]


def network(checkpoint: Path) -> TwoConvNet:
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    net = TwoConvNet()
    net.load_state_dict(
        {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    )
    return net.eval()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """Two quickstart seeds on the synthetic set: (data folder, log root, the config arguments)."""
    root = tmp_path_factory.mktemp("ensemble")
    data_dir = make_synthetic_mnist(root / "data")
    args = config_run_args("quickstart.yaml", data_dir, root / "logs", "--trainer.max_epochs", "1")
    for seed in (0, 1):
        assert run_main("fit", *args, "--seed_everything", str(seed))[0] == 0
    return data_dir, root / "logs", args


def test_two_identical_members_equal_the_single_checkpoint(two_runs, capsys):
    data_dir, logs, args = two_runs
    checkpoint = logs / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    code, out, err = run_main("ensemble", *args, "--checkpoints", f"[{checkpoint}, {checkpoint}]", capsys=capsys)
    assert code == 0, err[-3000:]
    first, second, ensemble = accuracies(out)
    assert first == second == ensemble


def test_an_ensemble_of_two_runs_matches_an_independent_computation(two_runs, capsys):
    data_dir, logs, args = two_runs
    code, out, err = run_main("ensemble", *args, "--runs", str(logs / "quickstart"), capsys=capsys)
    assert code == 0, err[-3000:]
    *members, ensemble = accuracies(out)
    assert len(members) == 2
    test = MNIST(data_dir, train=False)
    images = (test.data.float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    paths = [next((logs / "quickstart" / f"version_{index}" / "checkpoints").glob("best*.ckpt")) for index in (0, 1)]
    with torch.no_grad():
        probabilities = torch.stack([network(path)(images).softmax(dim=1) for path in paths])
    expected = (probabilities.mean(dim=0).argmax(dim=1) == test.targets).float().mean().item()
    single = [(p.argmax(dim=1) == test.targets).float().mean().item() for p in probabilities]
    assert ensemble == pytest.approx(expected, abs=1e-4)  # printed with two decimals of a percent
    assert members == pytest.approx(single, abs=1e-4)
    (logged,) = re.findall(r"logged to (\S+)", out)
    assert Path(logged).parent == logs / "quickstart" / "ensemble"
    scalars = read_events(Path(logged)).Scalars("ensemble/acc")
    assert scalars[-1].value == pytest.approx(expected, abs=1e-6)


def test_one_member_is_one_error_line(two_runs, capsys):
    _, logs, args = two_runs
    checkpoint = logs / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    code, _, err = run_main("ensemble", *args, "--checkpoints", f"[{checkpoint}]", capsys=capsys)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: an ensemble needs at least 2 members")
