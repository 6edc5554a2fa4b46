"""The benchmark scripts run end to end and print their tables (smoke tests: no timing is asserted)."""

import json
import re
import statistics
import subprocess
import sys

import pytest
from conftest import REPO


def test_benchmark_prints_a_row_per_way_with_positive_rates(real_data_dir, tmp_path):
    command = [
        sys.executable, "-m", "benchmarks.throughput",
        "--data-dir", str(real_data_dir), "--ways", "1,4,5", "--network", "linear",
        "--samples", "640", "--warmup-steps", "2", "--repeats", "1", "--threads", "1",
        "--json", str(tmp_path / "runs.json"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| (")]
    assert [row.split("|")[1].strip()[:3] for row in rows] == ["(1)", "(4)", "(5)"]
    for row in rows:
        samples_per_second = float(row.split("|")[2].replace(",", ""))
        assert samples_per_second > 0
    assert re.search(r"\(4\) process start to first training step: [\d.]+ s", result.stdout)
    # The gap to the plain loop, split into Lightning's own share and this product's.
    assert re.search(r"Lightning's own share, \(5\) vs \(1\): [\d.]+x", result.stdout)
    assert re.search(r"this product's share, \(4\) vs \(5\): [\d.]+x", result.stdout)
    assert (tmp_path / "runs.json").is_file()


def test_seed_loops_runs_each_seed_and_reports_their_mean(synthetic_data_dir, tmp_path):
    command = [
        sys.executable, "-m", "benchmarks.seed_loops", "seed001_conv_mlp",
        "--seeds", "0", "1", "--data-dir", str(synthetic_data_dir), "--threads", "1",
        "--json", str(tmp_path / "runs.json"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads((tmp_path / "runs.json").read_text())["runs"]
    assert [run["seed"] for run in runs] == [0, 1]
    accuracies = [run["accuracy"] for run in runs]
    assert all(0 <= accuracy <= 100 for accuracy in accuracies)
    assert f"mean {statistics.mean(accuracies):.2f}%" in result.stdout


def test_attribution_reads_per_step_costs_from_a_simple_profiler_report():
    sys.path.insert(0, str(REPO))  # the benchmarks are scripts beside the package
    from benchmarks.attribution import per_step_actions

    report = "\n".join([
        "|  Action  |  Mean duration (s)  |  Num calls  |  Total time (s)  |  Percentage %  |",
        "|  Total  |  -  |  999  |  3.0  |  100 %  |",
        "|  [Callback]ModelCheckpoint{'monitor': 'val/acc'}.on_train_batch_end  |  1e-05  |  200  |  0.002  |  0.1  |",
        "|  [Callback]RunProgressBar.on_train_batch_end  |  8e-05  |  200  |  0.016  |  0.5  |",
        "|  [Callback]Misclassified.on_validation_epoch_end  |  0.2  |  2  |  0.4  |  13  |",
    ])  # fmt: skip
    actions = per_step_actions(report, steps=200)
    # Per training step, in microseconds; hooks called less often than once a step are left out.
    assert actions == pytest.approx({
        "[Callback]ModelCheckpoint.on_train_batch_end": 10.0,
        "[Callback]RunProgressBar.on_train_batch_end": 80.0,
    })  # fmt: skip
