"""The ``sweep`` command: a grid or a search over any config on Optuna, with seeds, workers, pruning and resume.

    python -m lightning_cnn sweep configs/sweeps/seed000_grid.yaml
    python -m lightning_cnn sweep configs/sweeps/quickstart_lr.yaml --workers 2
    python -m lightning_cnn sweep configs/sweeps/quickstart_lr.yaml --storage postgresql://user:pass@host/db

The study lives in ``<log_root>/<name>/optuna.journal`` (or the ``--storage`` database); running the
same command again continues it. Results go to ``<log_root>/<name>/``: ``trials.csv``, ``sweep.md``,
``sweep.csv`` and Optuna's plots. Each trial's runs are ordinary run folders under ``<log_root>/<name>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lightning_cnn import cli
from lightning_cnn.errors import UserError
from lightning_cnn.runs.record import read_record
from lightning_cnn.sweeps import results
from lightning_cnn.sweeps.spec import SweepSpec, format_value, load_sweep
from lightning_cnn.sweeps.storage import StudyLock, open_storage
from lightning_cnn.sweeps.study import has_work, is_finished, load_or_create_study, recover_interrupted, worker_id
from lightning_cnn.sweeps.trial import RunFailedError, SweepStoppedError, objective, sample, test_run
from lightning_cnn.tools.report import duration


def check_options(spec: SweepSpec, extra: list[str]) -> None:
    """Every option the sweep sets must be one the CLI accepts (parsed once, with a value of each, before any run)."""
    arguments = [arg for config in spec.configs for arg in ("--config", config)]
    arguments += [f"--{key}={format_value(value)}" for key, value in spec.option_keys.items()]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            cli.main(["fit", *arguments, *extra, "--print_config"])
    except SystemExit as stop:
        if stop.code not in (0, None):
            lines = [line for line in errors.getvalue().splitlines() if line.startswith("error:")]
            reason = lines[-1].removeprefix("error: ") if lines else "the options are not accepted"
            raise UserError(
                f"the sweep's options do not parse: {reason}; fix the key or value in the sweep file"
            ) from None


def run_worker(spec: SweepSpec, args: argparse.Namespace, extra: list[str], worker_index: int) -> int:
    """Take trials from the study until none is left; returns the exit status (130 when stopped)."""
    sweep_dir = args.log_root / spec.name
    storage = open_storage(args.storage, sweep_dir)
    lock = StudyLock(args.storage, sweep_dir, spec.name)
    # One journal file means one machine: seeded samplers per worker; across machines, fresh entropy each.
    study = load_or_create_study(spec, storage, lock, sampler_seed=worker_index if args.storage is None else None)
    study.set_user_attr("metric", spec.metric)

    def locked_objective(trial: optuna.Trial) -> float:
        # Named and sampled before the lock is released: a trial found running without a worker, under
        # the lock, is one whose worker died while making it, and a stopped trial is run again with its
        # own configuration.
        trial.set_user_attr("worker", worker_id())
        sampled = sample(trial, spec)
        lock.release()  # the trial is made: other workers may take theirs
        return objective(trial, spec, args.log_root, extra, sampled)

    try:
        while True:
            lock.acquire()
            recover_interrupted(study, storage)
            if not has_work(study, spec):
                lock.release()
                return 0
            study.optimize(locked_objective, n_trials=1, catch=(RunFailedError,))
            lock.release()
    except SweepStoppedError as stop:
        return stop.exit_code
    except KeyboardInterrupt:  # Ctrl+C between runs
        return 130
    finally:
        lock.close()


def start_workers(spec: SweepSpec, args: argparse.Namespace, extra: list[str]) -> int:
    """``--workers N``: N processes on one study, sharing this machine's CPUs (one GPU each where there are several)."""
    import torch

    gpus = torch.cuda.device_count() if "CUDA_VISIBLE_DEVICES" not in os.environ else 0
    command = [sys.executable, "-m", "lightning_cnn", "sweep", str(args.sweep_file), "--log_root", str(args.log_root)]
    command += ["--storage", args.storage] if args.storage else []
    workers = []
    for index in range(args.workers):
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        workers.append(subprocess.Popen([*command, "--worker_index", str(index), "--", *extra], env=env))

    def forward(signum: int, frame: object) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [worker.wait() for worker in workers]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return max(codes, key=lambda code: (code >= 128, code))


def test_winner(
    spec: SweepSpec, args: argparse.Namespace, study: optuna.Study, lock: StudyLock, extra: list[str]
) -> None:
    """``test: best``: the best configuration on the validation metric, tested once per seed (by one process only)."""
    ranked = results.configurations(study)
    if not ranked or spec.test != "best":
        return
    with lock.held_for():
        if "tested" in study.user_attrs or study.user_attrs.get("testing_by") not in (None, worker_id()):
            return
        study.set_user_attr("testing_by", worker_id())
    winner, tested = ranked[0], {}
    overrides = winner.trial.user_attrs.get("overrides") or {}
    for run in winner.runs:
        run_dir = Path(run["run"])
        if not run_dir.is_dir():
            print(
                f"note: {run_dir} (the best configuration's run) is not on this machine; run the same command "
                f"on {run.get('host')} to test it",
                file=sys.stderr,
            )
            study.set_user_attr("testing_by", None)
            return
        tested[str(run.get("seed"))] = test_run(spec, args.log_root, winner.name, overrides, run_dir, extra)
    study.set_user_attr("tested", {str(winner.trial.number): tested})


def write_results(
    spec: SweepSpec, args: argparse.Namespace, study: optuna.Study, earlier: set[int]
) -> tuple[str, bool]:
    """trials.csv, sweep.md, sweep.csv and plots in the sweep folder; returns the Markdown and if a trial failed."""
    out = args.log_root / spec.name
    tested = study.user_attrs.get("tested") or {}
    header = ["run", "config", "overrides", "best val acc", "test acc", "train time", "status"]
    rows, failed = [], False
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number):
        if trial.state == TrialState.FAIL and "error" not in trial.user_attrs:
            continue  # stopped, and run again as a later trial
        row = results.Configuration(trial, results.trial_runs(trial))
        metric, test = row.metric(), row.test(tested)
        seconds = [(read_record(Path(run["run"])) or {}).get("train_seconds") for run in row.runs]
        seconds = [value for value in seconds if value is not None]
        status = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running"}.get(
            trial.state
        )
        if trial.state == TrialState.FAIL:
            status, failed = f"failed ({trial.user_attrs['error']})", True
        elif trial.state == TrialState.COMPLETE and trial.number in earlier:
            status = "done (skipped)"
        status = status or trial.state.name.lower()
        shown = [results.percent_or_na(metric), results.percent_or_na(test)]
        rows.append(
            [
                row.name,
                " + ".join(spec.configs),
                row.overrides,
                *shown,
                duration(sum(seconds) / len(seconds)) if seconds else "n/a",
                status,
            ]
        )
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]
    markdown = results.summary_markdown(study, spec, tested) + "\n" + "\n".join(table) + "\n"
    plots = results.write_plots(study, out / "plots")
    if plots:
        markdown += "\n" + "\n".join(f"![{name}](plots/{name})" for name in plots) + "\n"
    buffer = io.StringIO()
    import csv

    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    (out / "sweep.md").write_text(markdown)
    (out / "sweep.csv").write_text(buffer.getvalue())
    (out / "trials.csv").write_text(results.trials_csv(study))
    return markdown, failed


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_cnn sweep",
        description="Run a sweep file's grid or search on Optuna (fit each trial over its seeds, test the best) and "
        "write its tables; running it again continues the same study.",
        epilog="Overrides after '--' apply to every run, e.g. -- --trainer.accelerator=gpu",
    )
    parser.add_argument("sweep_file", type=Path, help="YAML with 'config' and 'grid', 'runs' and/or 'search'")
    parser.add_argument("--log_root", type=Path, default=Path("lightning_logs"), help="where run folders go")
    parser.add_argument(
        "--storage",
        default=None,
        help="an Optuna RDB URL shared by several machines (default: a journal file in the sweep folder)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument(
        "--dry_run", action="store_true", help="list the configurations and the search space, run nothing"
    )
    parser.add_argument("--worker_index", type=int, default=None, help=argparse.SUPPRESS)
    arguments = list(sys.argv[1:] if args is None else args)
    split = arguments.index("--") if "--" in arguments else len(arguments)
    options, extra = parser.parse_args(arguments[:split]), arguments[split + 1 :]
    if options.workers < 1:
        raise UserError(f"--workers {options.workers}: give 1 or more worker processes")
    spec = load_sweep(options.sweep_file)
    for config in spec.configs:
        if not Path(config).is_file():
            raise UserError(f"config {config} named in {options.sweep_file} does not exist; fix the 'config' entry")
    if options.dry_run:
        for name, overrides in spec.configurations.items():
            print(name, " ".join(f"--{key}={format_value(value)}" for key, value in overrides.items()))
        for key, parameter in spec.search.items():
            print(f"search {key}: {parameter}")
        return
    if options.worker_index is not None:
        sys.exit(run_worker(spec, options, extra, options.worker_index))
    check_options(spec, extra)
    sweep_dir = options.log_root / spec.name
    storage = open_storage(options.storage, sweep_dir)
    lock = StudyLock(options.storage, sweep_dir, spec.name)
    study = load_or_create_study(spec, storage, lock, sampler_seed=0)
    earlier = {trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    code = run_worker(spec, options, extra, 0) if options.workers == 1 else start_workers(spec, options, extra)
    if code < 128 and is_finished(study, spec):
        test_winner(spec, options, study, lock, extra)
    lock.close()
    markdown, failed = write_results(spec, options, study, earlier)
    print(markdown)
    if code:
        sys.exit(code)
    if failed:
        sys.exit(1)
