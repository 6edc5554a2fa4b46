"""The benchmark scripts run end to end and print their tables (smoke tests: no timing is asserted)."""

import json
import re
import statistics
import subprocess
import sys

from conftest import REPO


def test_benchmark_prints_a_row_per_way_with_positive_rates(real_data_dir, tmp_path):
    command = [
        sys.executable, "-m", "benchmarks.throughput",
        "--data-dir", str(real_data_dir), "--ways", "1,4", "--network", "linear",
        "--samples", "640", "--warmup-steps", "2", "--repeats", "1", "--threads", "1",
        "--json", str(tmp_path / "runs.json"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| (")]
    assert [row.split("|")[1].strip()[:3] for row in rows] == ["(1)", "(4)"]
    for row in rows:
        samples_per_second = float(row.split("|")[2].replace(",", ""))
        assert samples_per_second > 0
    assert re.search(r"\(4\) process start to first training step: [\d.]+ s", result.stdout)
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
