"""The ``compare`` command: two configurations run over the same seeds, their paired difference with its 95% interval.

    python -m lightning_cnn compare seed000_grid/default seed000_grid/lr0.05 --log_root lightning_logs

Each configuration is an experiment folder under the log root (its runs are the seeds, read from
their records); runs are paired by seed, so the seed-to-seed noise that both share cancels out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_cnn.errors import UserError
from lightning_cnn.runs.record import read_record, record_dirs
from lightning_cnn.sweeps.stats import compare_paired

METRICS = {"test": ("test", "test/acc"), "val": ("best", "val/acc")}


def seed_values(experiment_dir: Path, metric: str) -> dict[int, float]:
    """The metric of each seed's run in an experiment folder (the newest run of a seed counts)."""
    section, key = METRICS[metric]
    values: dict[int, float] = {}
    for run_dir in sorted(record_dirs(experiment_dir)):
        record = read_record(run_dir) or {}
        seed, value = (record.get("recipe") or {}).get("seed"), (record.get(section) or {}).get(key)
        if value is not None and str(seed).lstrip("-").isdigit():
            values[int(seed)] = float(value)
    return values


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_cnn compare",
        description="Compare two configurations run over the same seeds: the paired difference of their accuracy, "
        "its 95%% confidence interval and p-value (paired t test).",
    )
    parser.add_argument("a", help="experiment folder under the log root, e.g. seed000_grid/default")
    parser.add_argument("b", help="the other experiment folder")
    parser.add_argument("--log_root", type=Path, default=Path("lightning_logs"))
    parser.add_argument("--metric", choices=sorted(METRICS), default="test", help="test accuracy, or best validation")
    options = parser.parse_args(args)
    values = {}
    for name in (options.a, options.b):
        folder = options.log_root / name
        if not folder.is_dir():
            raise UserError(f"{folder} does not exist; name an experiment folder under --log_root {options.log_root}")
        values[name] = seed_values(folder, options.metric)
    common = set(values[options.a]) & set(values[options.b])
    if len(common) < 2:
        raise UserError(
            f"{options.a} and {options.b} have {len(common)} seeds in common with a {options.metric} accuracy; "
            "run both over the same seeds (sweep 'seeds: [0, 1, 2, ...]'), at least 2, and test them"
        )
    comparison = compare_paired(values[options.a], values[options.b])
    print(comparison.sentence(options.a, options.b))
