"""The GPU check's CPU mode end to end (``--accelerator cpu --quick``), so the script works before it meets a GPU.

The parent runs in this process; each part runs in a child process of its own, as on the GPU, since
a part's time limit is enforced by stopping that process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import REPO

# The benchmarks are scripts beside the package, run from the repository root (python -m benchmarks...).
sys.path.insert(0, str(REPO))
from benchmarks import device_check  # noqa: E402


def test_quick_cpu_mode_records_every_part_with_its_results(real_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results" / "device_results"
    status = device_check.main(["--accelerator", "cpu", "--quick", "--out", str(out), "--data-dir", str(real_data_dir)])
    assert status == 0
    results = json.loads(out.with_suffix(".json").read_text())
    parts = {part["part"]: part for part in results["parts"]}
    assert list(parts) == [part.name for part in device_check.PARTS]
    for name, part in parts.items():
        expected = "skipped (--quick)" if name.startswith("throughput: ") and name != "throughput: 32-true" else "ok"
        assert part["status"] == expected, (name, part.get("log_tail"))

    tests = parts["tests"]["result"]["tests"]
    assert tests and all(test["outcome"].startswith("skipped") for test in tests)  # GPU tests, on a CPU

    rows = parts["throughput: 32-true"]["result"]["rows"]
    assert sorted(rows) == ["1", "4", "5"]
    assert all(row["train_samples_per_s"] > 0 and row["val_samples_per_s"] > 0 for row in rows.values())

    precision = parts["precision: strong recipe"]["result"]["rows"]
    assert [row["precision"] for row in precision] == ["32-true", "bf16-mixed"]
    assert all(row["train_samples_per_s"] > 0 and 0 <= row["test_acc"] <= 1 for row in precision)

    fast = parts["time to 99%: fast_gpu.yaml"]["result"]
    assert fast["train_seconds"] > 0 and 0 <= fast["test_acc"] <= 1 and fast["epochs"] == 1

    markdown = out.with_suffix(".md").read_text()
    assert "| (5) bare Lightning" in markdown and "## time to 99%: fast_gpu.yaml" in markdown
    assert markdown.count("Not run: skipped (--quick).") == 4
    assert "`python -m benchmarks.device_check --accelerator cpu --quick --out" in markdown


def test_a_part_out_of_time_is_stopped_and_recorded_and_the_deadline_skips_the_rest(
    real_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "device_results"
    # The precision part trains and tests twice (imports alone take seconds): 10.5 s cannot hold it.
    argv = ["--accelerator", "cpu", "--quick", "--out", str(out), "--data-dir", str(real_data_dir)]
    status = device_check.main([*argv, "--parts", "precision,time to 99", "--deadline", "10.5"])
    assert status == 1
    parts = json.loads(out.with_suffix(".json").read_text())["parts"]
    assert [part["status"] for part in parts] == ["out of time (10 s)", "skipped (out of the overall deadline)"]
    assert parts[0]["seconds"] < 20  # stopped at its limit, children included, not left to finish
    assert "No result: out of time" in out.with_suffix(".md").read_text()
