"""A sweep's results in its folder: ``trials.csv`` (every trial), ``sweep.md`` and ``sweep.csv`` (configurations
ranked on the validation metric, mean and 95% interval over seeds, and their test accuracy), and Optuna's plots."""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from lightning_cnn.sweeps.spec import SweepSpec
from lightning_cnn.sweeps.stats import Spread, spread


@dataclass
class Configuration:
    """One trial as a row: its runs over the seeds, their metric and (when tested) their test accuracy."""

    trial: FrozenTrial
    runs: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.trial.user_attrs.get("name", f"trial_{self.trial.number:03d}")

    @property
    def overrides(self) -> str:
        overrides = self.trial.user_attrs.get("overrides") or {}
        return " ".join(f"{key}={value}" for key, value in overrides.items()) or "(none)"

    def metric(self) -> Spread | None:
        values = [run["value"] for run in self.runs if run.get("value") is not None]
        return spread(values) if values else None

    def test(self, tested: dict) -> Spread | None:
        values = [run["test_acc"] for run in self.runs if run.get("test_acc") is not None]
        values += list((tested.get(str(self.trial.number)) or {}).values())
        return spread(values) if values else None


def trial_runs(trial: FrozenTrial) -> list[dict]:
    runs = [value for key, value in trial.user_attrs.items() if key.startswith("run_") and isinstance(value, dict)]
    return sorted(runs, key=lambda run: str(run.get("seed")))


def configurations(study: optuna.Study) -> list[Configuration]:
    """The study's completed trials, best first by the sweep's metric (the mean over seeds)."""
    done = [
        Configuration(trial, trial_runs(trial))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda row: row.trial.value, reverse=reverse)


def trials_csv(study: optuna.Study) -> str:
    """Every trial: number, state, name, parameters, each seed's metric and run folder, and a failed one's error."""
    trials = study.get_trials(deepcopy=False)
    parameters = sorted({name for trial in trials for name in trial.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["number", "state", "name", *parameters, "seed", "metric", "value", "test_acc", "run", "error", "retry_of"]
    )
    for trial in trials:
        base = [trial.number, trial.state.name, trial.user_attrs.get("name", "")]
        base += [trial.params.get(name, "") for name in parameters]
        tail = [trial.user_attrs.get("error", ""), trial.user_attrs.get("retry_of", "")]
        runs = trial_runs(trial) or [{}]
        for run in runs:
            value = run.get("value", "")
            writer.writerow(
                [
                    *base,
                    run.get("seed", ""),
                    study.user_attrs.get("metric", ""),
                    value,
                    run.get("test_acc", ""),
                    run.get("run", ""),
                    *tail,
                ]
            )
    return buffer.getvalue()


def percent_or_na(value: Spread | None) -> str:
    return "n/a" if value is None else value.percent()


def summary_markdown(study: optuna.Study, spec: SweepSpec, tested: dict) -> str:
    """Configurations ranked on the validation metric, with the test accuracy of those tested, and what was tested."""
    rows = configurations(study)
    states = {state: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    counts = ", ".join(f"{count} {state.name.lower()}" for state, count in states.items() if count)
    lines = [
        f"### Sweep `{spec.name}`",
        "",
        f"Trials: {counts}. Ranked on {spec.metric} ({spec.direction}), the mean over "
        f"{len(spec.seeds) or 1} seed{'s' if len(spec.seeds) > 1 else ''}; ± is the standard deviation, with the "
        "95% confidence interval of the mean (t distribution).",
    ]
    if spec.test == "every":
        lines.append(
            "The test set was used for every run (test: every), as the tutorial's table did; choose by the "
            "validation column, not the test column."
        )
    elif rows:
        lines.append(
            f"Only the best configuration on {spec.metric}, `{rows[0].name}`, was tested on the test set "
            "(over its seeds); the others were never tested."
        )
    lines += ["", "| rank | configuration | overrides | " + spec.metric + " | test acc |", "|---:|---|---|---|---|"]
    for rank, row in enumerate(rows, 1):
        metric = row.metric()
        shown = percent_or_na(metric) if spec.metric.endswith("acc") else (f"{metric.mean:.4g}" if metric else "n/a")
        lines.append(f"| {rank} | `{row.name}` | {row.overrides} | {shown} | {percent_or_na(row.test(tested))} |")
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    for trial in failed:
        if "error" in trial.user_attrs:
            lines.append(
                f"\nTrial {trial.number} (`{trial.user_attrs.get('name', '?')}`) failed: {trial.user_attrs['error']}"
            )
    return "\n".join(lines) + "\n"


def write_plots(study: optuna.Study, out: Path) -> list[str]:
    """Optuna's optimization history, parameter importances and parallel coordinates as PNG (those that apply)."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    written = []
    for name, plot in (
        ("optimization_history", plots.plot_optimization_history),
        ("param_importances", plots.plot_param_importances),
        ("parallel_coordinate", plots.plot_parallel_coordinate),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need two completed trials and a parameter that varies
        figure = axes.flat[0].figure if isinstance(axes, np.ndarray) else axes.figure  # one Axes, or a grid of them
        out.mkdir(parents=True, exist_ok=True)
        figure.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
        matplotlib.pyplot.close(figure)
        written.append(f"{name}.png")
    return written
