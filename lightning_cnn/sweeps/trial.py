"""One trial: its configuration fitted once per seed (each seed a run folder of its own), in this process.

Runs are in the worker's process rather than a child process: a Python start with Lightning costs
seconds of imports, as much as a short trial's training, while a trial that crashes its process
is failed and run again anyway (see :mod:`lightning_cnn.sweeps.study`). The first seed's fit
reports its metric each epoch, so an unpromising trial is pruned before it costs more seeds.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna_integration import PyTorchLightningPruningCallback

from lightning_cnn import cli
from lightning_cnn.runs.record import read_record
from lightning_cnn.sweeps.spec import SearchParameter, SweepSpec, format_value
from lightning_cnn.sweeps.study import CONFIGURATION, worker_id

# The trial that the pruning callback of the fit running now reports to (one fit at a time per process).
ACTIVE_TRIAL: optuna.Trial | None = None


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's pruning callback for the trial this process is running (it is named in the fit's trainer.callbacks)."""

    def __init__(self, monitor: str = "val/acc") -> None:
        if ACTIVE_TRIAL is None:
            raise RuntimeError("TrialPruning is added by 'python -m lightning_cnn sweep' only")
        super().__init__(ACTIVE_TRIAL, monitor)


class SweepStoppedError(KeyboardInterrupt):
    """The sweep was stopped (Ctrl+C, SIGTERM) inside a run: the trial fails, is run again on the next start, and the
    sweep exits with the run's status (130, 143)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


class RunFailedError(Exception):
    """A run of the trial ended with an error (a NaN loss, a bad value): the trial fails and the study goes on."""


class Tee(io.TextIOBase):
    """Writes to the terminal and keeps the last lines, so a failed run's error line can be recorded."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.text = stream, ""

    def write(self, text: str) -> int:
        self.text = (self.text + text)[-20000:]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def error_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        return (errors or lines or ["failed without a message"])[-1]


@dataclass
class RunResult:
    run_dir: Path
    value: float | None  # the sweep's metric: its best value over the run's epochs
    test_acc: float | None = None


def suggest(trial: optuna.Trial, parameter: SearchParameter) -> Any:  # noqa: ANN401
    if parameter.type == "categorical":
        return trial.suggest_categorical(parameter.key, list(parameter.choices))
    if parameter.type == "int":
        step = int(parameter.step or 1)
        return trial.suggest_int(parameter.key, int(parameter.low), int(parameter.high), step=step, log=parameter.log)
    return trial.suggest_float(parameter.key, parameter.low, parameter.high, step=parameter.step, log=parameter.log)


def trial_overrides(trial: optuna.Trial, spec: SweepSpec) -> tuple[str, dict[str, Any]]:
    """The trial's run name and every override it runs with (the sweep's, its configuration's, its samples)."""
    overrides = dict(spec.overrides)
    name = f"trial_{trial.number:03d}"
    if spec.configurations:
        configuration = trial.suggest_categorical(CONFIGURATION, list(spec.configurations))
        overrides.update(spec.configurations[configuration])
        name = configuration if spec.sampler == "grid" else f"{name}_{configuration}"
    for key, parameter in spec.search.items():
        overrides[key] = suggest(trial, parameter)
    return name, overrides


def run_arguments(spec: SweepSpec, log_root: Path, name: str, overrides: dict[str, Any], extra: list[str]) -> list[str]:
    return [
        *(arg for config in spec.configs for arg in ("--config", config)),
        *(f"--{key}={format_value(value)}" for key, value in overrides.items()),
        f"--trainer.logger.init_args.save_dir={log_root}",
        f"--trainer.logger.init_args.name={spec.name}/{name}",
        *extra,
    ]


def metric_value(record: dict, metric: str, direction: str) -> float | None:
    """The run's best value of ``metric`` over its epochs (val/acc: its best validation accuracy)."""
    points = [value for _, value in record.get("curves", {}).get(metric, [])]
    if not points and metric in record.get("final", {}):
        points = [record["final"][metric]]
    if not points:
        return None
    return max(points) if direction == "maximize" else min(points)


def call_cli(arguments: list[str]) -> None:
    """Run one command of the CLI in this process; a failed one raises RunFailedError with its error line."""
    tee = Tee(sys.stderr)
    try:
        with contextlib.redirect_stderr(tee):
            cli.main(arguments)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
        if code >= 128:
            raise SweepStoppedError(code) from None
        if code != 0:
            raise RunFailedError(tee.error_line()) from None
    except optuna.TrialPruned:
        raise
    except Exception as error:  # noqa: BLE001 (a crash of one run fails its trial; the study goes on)
        raise RunFailedError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None


def fit_and_test(
    spec: SweepSpec, log_root: Path, name: str, overrides: dict, seed: int | None, extra: list[str], prune: bool
) -> RunResult:
    """One seed of the trial: fit (reporting to the pruner if ``prune``), and test it too with ``test: every``."""
    arguments = run_arguments(spec, log_root, name, overrides, extra)
    if seed is not None:
        arguments.append(f"--seed_everything={seed}")
    callback = {"class_path": "lightning_cnn.sweeps.trial.TrialPruning", "init_args": {"monitor": spec.metric}}
    pruning = [f"--trainer.callbacks+={json.dumps(callback)}"] if prune else []
    try:
        call_cli(["fit", *arguments, *pruning])
    finally:
        run_dir = cli.CNNLightningCLI.last_claimed_run
    record = read_record(run_dir) if run_dir is not None else None
    if record is None:
        raise RunFailedError(f"the run left no record in {run_dir}")
    result = RunResult(run_dir, metric_value(record, spec.metric, spec.direction))
    if spec.test == "every":
        result.test_acc = test_run(spec, log_root, name, overrides, run_dir, extra)
    return result


def test_run(
    spec: SweepSpec, log_root: Path, name: str, overrides: dict, run_dir: Path, extra: list[str]
) -> float | None:
    """Test a run on the test set: its best checkpoint (last, for a run trained without validation)."""
    record = read_record(run_dir) or {}
    checkpoints = record.get("checkpoints", {})
    checkpoint = checkpoints.get("best") or checkpoints.get("last")
    if checkpoint is None:
        raise RunFailedError(f"the run {run_dir} saved no checkpoint to test")
    call_cli(["test", *run_arguments(spec, log_root, name, overrides, extra), f"--ckpt_path={run_dir / checkpoint}"])
    return ((read_record(run_dir) or {}).get("test") or {}).get("test/acc")


def sample(trial: optuna.Trial, spec: SweepSpec) -> tuple[str, dict[str, Any]]:
    """Draw the trial's configuration and record it on the trial (its name and overrides)."""
    name, overrides = trial_overrides(trial, spec)
    trial.set_user_attr("name", name)
    trial.set_user_attr("overrides", {key: format_value(value) for key, value in overrides.items()})
    return name, overrides


def objective(
    trial: optuna.Trial, spec: SweepSpec, log_root: Path, extra: list[str], sampled: tuple[str, dict] | None = None
) -> float:
    """Fit the trial's configuration (``sampled``, or drawn now) over its seeds; its value: their mean metric."""
    global ACTIVE_TRIAL
    name, overrides = sampled if sampled is not None else sample(trial, spec)
    values = []
    for index, seed in enumerate(spec.seeds or [None]):
        ACTIVE_TRIAL = trial
        try:
            result = fit_and_test(
                spec, log_root, name, overrides, seed, extra, prune=index == 0 and spec.pruner != "none"
            )
        except RunFailedError as error:
            # Recorded with its error line; NaN tells Optuna the trial failed (without a traceback in the log).
            trial.set_user_attr("error", str(error))
            return float("nan")
        finally:
            ACTIVE_TRIAL = None
        run = {"seed": seed, "run": str(result.run_dir), "host": worker_id().rsplit(":", 1)[0], "value": result.value}
        if result.test_acc is not None:
            run["test_acc"] = result.test_acc
        trial.set_user_attr(f"run_{index}", run)
        if result.value is None:
            trial.set_user_attr(
                "error",
                f"the run {result.run_dir} logged no {spec.metric}, so it cannot be ranked (a run without validation, "
                "data.val_split=0, has no val/ metric); hold out validation images or choose the sweep's metric",
            )
            return float("nan")
        values.append(result.value)
    return sum(values) / len(values)
