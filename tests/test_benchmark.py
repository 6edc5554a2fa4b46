"""The throughput benchmark runs end to end and prints its table (a smoke test: no timing is asserted)."""

import re
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
