"""The report: its table holds exactly the numbers the runs logged, and its plots are real PNG files."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import pytest
from conftest import config_run_args, logged, make_synthetic_mnist, run_cli, run_main
from PIL import Image

from lightning_cnn import cli
from lightning_cnn.runs.summary import collect_runs
from lightning_cnn.tools.report import write_report

RUNS = {"quickstart/version_0": 2, "seed000/version_0": 1}  # run -> epochs trained


@pytest.fixture(scope="module")
def log_root(tmp_path_factory) -> Path:
    """Two tiny runs: quickstart (Adam + one-cycle, 2 epochs, then tested) and seed000 (SGD, 1 epoch, untested)."""
    root = tmp_path_factory.mktemp("report")
    data_dir = make_synthetic_mnist(root / "data")
    logs = root / "logs"

    def args(config: str, name: str, *extra: str) -> list[str]:
        return config_run_args(config, data_dir, logs, *extra, name=name)

    # In-process for speed; the command itself is exercised in a subprocess below.
    # No image budget for the quickstart run: its class visualization is drawn in full.
    cli.main(["fit", *args("quickstart.yaml", "quickstart", "--trainer.max_epochs", "2", "--insight.time_budget", "1")])
    cli.main(["test", *args("quickstart.yaml", "quickstart"), "--ckpt_path", "best"])
    cli.main(["fit", *args("seed000_two_conv.yaml", "seed000", "--trainer.max_epochs", "1")])
    return logs


def test_collect_runs_returns_the_logged_numbers(log_root):
    runs = {run.run: run for run in collect_runs(log_root)}
    assert set(runs) == set(RUNS)
    for name, epochs in RUNS.items():
        run, run_dir = runs[name], log_root / name
        assert run.best_val_acc == max(logged(run_dir, "val/acc_best"))
        # Timed by the run record and by the dashboard's timer, each from the start to the end of training.
        assert run.train_seconds == pytest.approx(logged(run_dir, "time/train_seconds")[0], abs=0.01)
        assert run.train_seconds > 0
        assert run.epochs == epochs == len(logged(run_dir, "train/loss"))
        assert [value for _, value in run.curves["val/acc"]] == logged(run_dir, "val/acc")
        assert [epoch for epoch, _ in run.curves["train/loss"]] == list(range(1, epochs + 1))
        assert (run.architecture, run.parameters, run.max_epochs) == ("TwoConvNet", 8490, epochs)
    assert runs["quickstart/version_0"].test_acc == logged(log_root / "quickstart/version_0", "test/acc")[-1]
    assert runs["seed000/version_0"].test_acc is None
    assert runs["quickstart/version_0"].recipe == "Adam lr 0.01, OneCycleLR, batch 128, 2 epochs, no augmentation"
    assert runs["seed000/version_0"].recipe == "SGD lr 0.01, constant lr, batch 64, 1 epoch, no augmentation"


def test_the_report_reads_the_run_record_alone(log_root, tmp_path, capsys):
    """Run folders holding only their summary.json give the same runs; event files without one are named."""
    copy = tmp_path / "records"
    for name in RUNS:
        (copy / name).mkdir(parents=True)
        shutil.copy(log_root / name / "summary.json", copy / name / "summary.json")
    unrecorded = copy / "older" / "version_0"
    unrecorded.mkdir(parents=True)
    for event_file in (log_root / "seed000/version_0").glob("events.out.tfevents.*"):
        shutil.copy(event_file, unrecorded)
    assert collect_runs(copy) == [dataclasses.replace(run, path=copy / run.run) for run in collect_runs(log_root)]
    code, out, err = run_main("report", "--log_root", str(copy), "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 0
    assert "older" not in out
    (note,) = err.strip().splitlines()
    assert note.startswith("note: 1 folders") and str(unrecorded) in note


def test_report_command_writes_tables_equal_to_the_logged_numbers_and_plots(log_root, tmp_path):
    out = tmp_path / "report"
    result = run_cli("report", "--log_root", str(log_root), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["run"]: row for row in csv.DictReader((out / "runs.csv").open())}
    markdown = (out / "runs.md").read_text()
    assert set(rows) == set(RUNS)
    for name, epochs in RUNS.items():
        row, run_dir = rows[name], log_root / name
        best = max(logged(run_dir, "val/acc_best"))
        assert float(row["best_val_acc"]) == best
        assert float(row["train_seconds"]) == pytest.approx(logged(run_dir, "time/train_seconds")[0], abs=0.01)
        assert int(row["epochs"]) == epochs and int(row["parameters"]) == 8490
        line = next(line for line in markdown.splitlines() if f"`{name}`" in line)
        assert f"| {100 * best:.2f}% |" in line and "| 8,490 |" in line
    test_acc = logged(log_root / "quickstart/version_0", "test/acc")[-1]
    assert float(rows["quickstart/version_0"]["test_acc"]) == test_acc
    assert rows["seed000/version_0"]["test_acc"] == ""
    for png in ("overlay.png", "curves/quickstart_version_0.png", "curves/seed000_version_0.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.width >= 600, png
    assert "runs.md" in result.stdout or "quickstart/version_0" in result.stdout


def test_report_defaults_to_a_folder_inside_the_log_root(log_root):
    out, runs = write_report(log_root)
    assert out == log_root / "report" and (out / "runs.csv").is_file()
    # The report folder holds no event files, so it never shows up as a run.
    assert [run.run for run in collect_runs(log_root)] == [run.run for run in runs] == sorted(RUNS)


@pytest.mark.parametrize(
    ("make_root", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no runs under"),
    ],
    ids=["missing", "empty"],
)
def test_report_on_a_log_root_without_runs_says_what_to_do(tmp_path, make_root, message):
    log_root = make_root(tmp_path)
    out = tmp_path / "out"
    result = run_cli("report", "--log_root", str(log_root), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line and "--log_root" in line
    assert not out.exists()


def test_main_help_mentions_the_report_command(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "report" in result.stdout


def test_the_report_shows_what_each_network_sees(log_root, tmp_path):
    out, runs = write_report(log_root, tmp_path / "seen")
    pictures = [run for run in runs if (run.path / "class_visualization.png").is_file()]
    assert pictures  # the fits wrote their class visualization
    markdown = (out / "runs.md").read_text()
    assert "## What each network sees" in markdown
    for run in pictures:
        copy = out / "class_visualization" / f"{run.run.replace('/', '_')}.png"
        assert copy.read_bytes() == (run.path / "class_visualization.png").read_bytes()
        assert f"](class_visualization/{copy.name})" in markdown
