"""Run a grid of overrides of any config, one process per run, and tabulate what the runs logged.

A sweep file names a base config and the runs, either listed (``runs:`` name -> overrides) or as
the cartesian product of values (``grid:`` key -> list); ``overrides:`` apply to every run, before
its own. Each run is ``fit`` then ``test --ckpt_path best`` (``last`` for a run trained without
validation) in its own processes, logging under ``<log_root>/<sweep>/<run>/``; a failed run is
recorded and the rest go on; a run whose record already holds a test result is skipped.

    python -m lightning_cnn sweep configs/sweeps/seed000_grid.yaml
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lightning_cnn.errors import UserError
from lightning_cnn.runs.checkpoints import tracked_best
from lightning_cnn.runs.folders import run_versions
from lightning_cnn.runs.record import read_record
from lightning_cnn.runs.summary import RunSummary, summarize_run
from lightning_cnn.tools.report import duration, percent


@dataclass
class SweepRun:
    name: str
    overrides: dict[str, object]
    status: str = "pending"
    best_val_acc: float | None = None
    test_acc: float | None = None
    train_seconds: float | None = None
    command_seconds: float | None = None


def _format_value(value: object) -> str:
    # jsonargparse reads each value as YAML, so dump lists/dicts/None the same way.
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _run_name(overrides: dict[str, object]) -> str:
    if not overrides:
        return "default"
    parts = [f"{key.rsplit('.', 1)[-1]}={_format_value(value)}" for key, value in overrides.items()]
    return ",".join(parts).replace("/", "_").replace(" ", "")


def load_sweep(path: Path) -> tuple[str, list[str], list[SweepRun]]:
    """Read a sweep file: its name, base config files and runs."""
    if not path.is_file():
        raise UserError(
            f"sweep file {path} does not exist; pass the path of a sweep YAML such as configs/sweeps/seed000_grid.yaml"
        )
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"sweep file {path} is not valid YAML ({error}); fix its syntax") from None
    unknown = set(spec) - {"name", "config", "overrides", "runs", "grid"}
    if unknown:
        raise UserError(
            f"sweep file {path} has unknown keys {sorted(unknown)}; use name, config, overrides, runs and/or grid"
        )
    configs = spec.get("config")
    configs = [configs] if isinstance(configs, str) else list(configs or [])
    if not configs:
        raise UserError(f"sweep file {path} names no base config; add 'config: configs/<experiment>.yaml'")
    common = dict(spec.get("overrides") or {})  # every run's, before its own
    runs = [SweepRun(name, {**common, **(overrides or {})}) for name, overrides in (spec.get("runs") or {}).items()]
    grid = spec.get("grid") or {}
    if grid:
        keys = list(grid)
        for values in itertools.product(*(grid[key] if isinstance(grid[key], list) else [grid[key]] for key in keys)):
            overrides = dict(zip(keys, values, strict=True))
            runs.append(SweepRun(_run_name(overrides), {**common, **overrides}))
    if not runs:
        raise UserError(f"sweep file {path} defines no runs; add a 'runs:' mapping or a 'grid:' of values")
    return spec.get("name") or path.stem, configs, runs


def _finished(experiment_dir: Path) -> Path | None:
    """The first run of the experiment whose record holds a test result."""
    for run_dir in sorted(experiment_dir.glob("version_*")):
        record = read_record(run_dir)
        if record is not None and record.get("test"):
            return run_dir
    return None


def _test_checkpoint(experiment_dir: Path) -> str:
    """``best`` for a run that tracked one (it was validated), ``last`` for one trained without validation."""
    runs = run_versions(experiment_dir)
    last = runs[0] / "checkpoints" / "last.ckpt" if runs else None
    if last is None or not last.is_file():
        return "best"  # the test command names what is missing
    return "best" if tracked_best(last) else "last"


def execute(run: SweepRun, sweep: str, configs: list[str], log_root: Path, extra: list[str]) -> None:
    """Fit then test one run in subprocesses, appending their output to the run's ``sweep.log``."""
    experiment_dir = log_root / sweep / run.name
    run_dir = _finished(experiment_dir)
    if run_dir is not None:
        run.status = "done (skipped)"
    else:
        experiment_dir.mkdir(parents=True, exist_ok=True)
        base = [arg for config in configs for arg in ("--config", config)]
        logger = [
            f"--trainer.logger.init_args.save_dir={log_root}",
            f"--trainer.logger.init_args.name={sweep}/{run.name}",
        ]
        overrides = [f"--{key}={_format_value(value)}" for key, value in run.overrides.items()]
        started = time.perf_counter()
        with open(experiment_dir / "sweep.log", "a") as log:
            for subcommand in ("fit", "test"):
                tail = [f"--ckpt_path={_test_checkpoint(experiment_dir)}"] if subcommand == "test" else []
                command = [sys.executable, "-m", "lightning_cnn", subcommand, *base, *overrides, *logger, *extra, *tail]
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
                if code != 0:
                    run.status = f"failed ({subcommand}, exit {code}; see {experiment_dir / 'sweep.log'})"
                    return
        run.command_seconds = time.perf_counter() - started
        run_dir = run_versions(experiment_dir)[0]
        run.status = "done"
    summary = summarize_run(run_dir, log_root) or RunSummary(run.name, run_dir)
    run.best_val_acc, run.test_acc, run.train_seconds = summary.best_val_acc, summary.test_acc, summary.train_seconds


def tables(sweep: str, configs: list[str], runs: list[SweepRun]) -> tuple[str, str]:
    """The sweep's Markdown and CSV tables."""
    header = ["run", "config", "overrides", "best val acc", "test acc", "train time", "status"]
    rows = []
    for run in runs:
        overrides = " ".join(f"{k}={_format_value(v)}" for k, v in run.overrides.items()) or "(none)"
        rows.append(
            [
                run.name,
                " + ".join(configs),
                overrides,
                percent(run.best_val_acc),
                percent(run.test_acc),
                duration(run.train_seconds),
                run.status,
            ]
        )
    markdown = "\n".join(
        [f"### Sweep `{sweep}`", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(row) + " |" for row in rows]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return markdown + "\n", buffer.getvalue()


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_cnn sweep",
        description="Run every override set of a sweep file (fit, then test on the best checkpoint) and print a table.",
    )
    parser.add_argument("sweep_file", type=Path, help="YAML with 'config' and 'runs' and/or 'grid'")
    parser.add_argument("--log_root", type=Path, default=Path("lightning_logs"), help="where run folders go")
    parser.add_argument("--dry_run", action="store_true", help="list the runs without starting them")
    parser.epilog = "Overrides after '--' apply to every run, e.g. -- --trainer.accelerator=gpu"
    args = list(sys.argv[1:] if args is None else args)
    split = args.index("--") if "--" in args else len(args)
    options, extra = parser.parse_args(args[:split]), args[split + 1 :]
    sweep, configs, runs = load_sweep(options.sweep_file)
    for config in configs:
        if not Path(config).is_file():
            raise UserError(f"config {config} named in {options.sweep_file} does not exist; fix the 'config' entry")
    if options.dry_run:
        for run in runs:
            print(run.name, " ".join(f"--{k}={_format_value(v)}" for k, v in run.overrides.items()))
        return
    for index, run in enumerate(runs, 1):
        print(f"[{index}/{len(runs)}] {run.name}", flush=True)
        execute(run, sweep, configs, options.log_root, extra)
        scores = f": best val {percent(run.best_val_acc)}, test {percent(run.test_acc)}" if run.test_acc else ""
        print(f"    {run.status}{scores}", flush=True)
    markdown, csv_text = tables(sweep, configs, runs)
    (options.log_root / sweep).mkdir(parents=True, exist_ok=True)
    (options.log_root / sweep / "sweep.md").write_text(markdown)
    (options.log_root / sweep / "sweep.csv").write_text(csv_text)
    print(markdown)
    if any(run.status.startswith("failed") for run in runs):
        sys.exit(1)
