"""ensemble: the averaged softmax of several checkpoints on the test set, checked against an independent computation."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from conftest import config_run_args, make_synthetic_mnist, read_events, run_main
from torchvision.datasets import MNIST

from lightning_cnn.models import TwoConvNet
from lightning_cnn.runs.summary import collect_runs
from lightning_cnn.tools.ensemble import shifted
from lightning_cnn.tools.results import results_markdown


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


def normalized_test_images(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    test = MNIST(data_dir, train=False)
    return (test.data.float().unsqueeze(1) / 255 - 0.1307) / 0.3081, test.targets


def shift_by_indexing(images: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """One-pixel shifts written out by index: the content moves, the uncovered edge repeats its neighbour."""
    out = images.clone()
    if rows == 1:
        out[..., 1:, :], out[..., 0, :] = images[..., :-1, :], images[..., 0, :]
    elif rows == -1:
        out[..., :-1, :], out[..., -1, :] = images[..., 1:, :], images[..., -1, :]
    if columns:
        source = out.clone()
        if columns == 1:
            out[..., :, 1:], out[..., :, 0] = source[..., :, :-1], source[..., :, 0]
        else:
            out[..., :, :-1], out[..., :, -1] = source[..., :, 1:], source[..., :, -1]
    return out


@pytest.mark.parametrize(("rows", "columns"), [(1, 0), (-1, 0), (0, 1), (0, -1)])
def test_a_shift_moves_the_image_one_pixel_and_repeats_the_edge(rows, columns):
    images = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).reshape(2, 1, 5, 6)
    assert torch.equal(shifted(images, rows, columns), shift_by_indexing(images, rows, columns))


def test_tta_and_the_record_match_an_independent_computation(two_runs, capsys):
    data_dir, logs, args = two_runs
    code, out, err = run_main("ensemble", *args, "--runs", str(logs / "quickstart"), "--tta", "true", capsys=capsys)
    assert code == 0, err[-3000:]
    lines = [line for line in out.splitlines() if "test acc" in line]
    plain = [float(value) / 100 for value in re.findall(r"test acc ([\d.]+)%", "\n".join(lines))]
    with_tta = [float(value) / 100 for value in re.findall(r"\(tta ([\d.]+)%\)", "\n".join(lines))]
    assert len(plain) == len(with_tta) == 3
    images, labels = normalized_test_images(data_dir)
    views = [images, *(shift_by_indexing(images, r, c) for r, c in ((1, 0), (-1, 0), (0, 1), (0, -1)))]
    paths = [next((logs / "quickstart" / f"version_{index}" / "checkpoints").glob("best*.ckpt")) for index in (0, 1)]
    with torch.no_grad():
        members = [torch.stack([network(path)(view).softmax(dim=1) for view in views]).mean(dim=0) for path in paths]
    accuracy = lambda p: (p.argmax(dim=1) == labels).float().mean().item()  # noqa: E731
    assert with_tta == pytest.approx([*map(accuracy, members), accuracy(sum(members) / 2)], abs=1e-4)

    # Both ensembles are runs of their own, on the results page like any experiment.
    logged = re.findall(r"logged to (\S+)", out)
    assert [Path(folder).parent.name for folder in logged] == ["ensemble", "ensemble_tta"]
    runs = {run.run.rsplit("/version_", 1)[0]: run for run in collect_runs(logs)}
    assert runs["quickstart/ensemble"].test_acc == pytest.approx(plain[-1], abs=1e-4)
    assert runs["quickstart/ensemble_tta"].test_acc == pytest.approx(with_tta[-1], abs=1e-4)
    row = next(line for line in results_markdown(logs).splitlines() if line.startswith("| `quickstart/ensemble_tta`"))
    assert "ensemble of 2 runs with TTA" in row and f"{100 * with_tta[-1]:.2f}%" in row


def test_predict_writes_the_ensembles_probabilities(two_runs, tmp_path, capsys):
    data_dir, logs, args = two_runs
    output = tmp_path / "ensemble.csv"
    code, out, err = run_main(
        "ensemble", *args, "--runs", str(logs / "quickstart"), "--predict", "true",
        "--predictions.output", str(output), capsys=capsys,
    )  # fmt: skip
    assert code == 0, err[-3000:]
    images, _ = normalized_test_images(data_dir)
    paths = [next((logs / "quickstart" / f"version_{index}" / "checkpoints").glob("best*.ckpt")) for index in (0, 1)]
    with torch.no_grad():
        expected = torch.stack([network(path)(images).softmax(dim=1) for path in paths]).mean(dim=0)
    with output.open() as file:
        rows = list(csv.DictReader(file))
    predicted = torch.tensor([[float(row[f"probability_{k}"]) for k in range(10)] for row in rows])
    torch.testing.assert_close(predicted, expected, atol=2e-6, rtol=0)
    assert [row["prediction"] for row in rows] == [str(k) for k in expected.argmax(dim=1).tolist()]
