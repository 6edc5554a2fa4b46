"""The sweep command on Optuna: one study for grids and searches, seeds with intervals, workers, resume, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO, run_cli, run_main
from optuna.trial import TrialState

from lightning_cnn.runs.record import read_record
from lightning_cnn.sweeps.spec import load_sweep
from lightning_cnn.sweeps.stats import compare_paired, spread
from lightning_cnn.sweeps.storage import JOURNAL_FILE, open_storage

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
TINY = {"data.val_split": 100}  # of the 600 synthetic training images


def write_sweep(tmp_path: Path, spec: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def tiny_run(data_dir: Path) -> list[str]:
    """What every run of these sweeps adds: the synthetic data, one short epoch, no progress bar (the sweeps
    themselves hold out 100 validation images, TINY)."""
    return [
        "--",
        f"--data.data_dir={data_dir}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.enable_progress_bar=false",
        "--insight.graph=false",
    ]


def load_study(log_root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(None, log_root / name))


def test_grid_expands_to_the_cartesian_product(tmp_path):
    path = write_sweep(
        tmp_path,
        {"config": "a.yaml", "grid": {"data.batch_size": [10, 64], "model.optimizer.init_args.lr": [0.1, 0.01]}},
    )
    spec = load_sweep(path)
    assert spec.name == "sweep" and spec.configs == ["a.yaml"] and spec.sampler == "grid" and spec.n_trials == 4
    assert list(spec.configurations.values()) == [
        {"data.batch_size": 10, "model.optimizer.init_args.lr": 0.1},
        {"data.batch_size": 10, "model.optimizer.init_args.lr": 0.01},
        {"data.batch_size": 64, "model.optimizer.init_args.lr": 0.1},
        {"data.batch_size": 64, "model.optimizer.init_args.lr": 0.01},
    ]


def test_seed000_grid_lists_the_tutorials_six_runs_and_tests_each_as_the_tutorial_did():
    spec = load_sweep(REPO / "configs" / "sweeps" / "seed000_grid.yaml")
    assert spec.configs == ["configs/seed000_two_conv.yaml"] and spec.overrides == {"data.val_split": 5000}
    assert list(spec.configurations) == ["default", "batch10", "lr0.05", "lr0.1", "batch10_lr0.05", "batch10_lr0.005"]
    assert (spec.sampler, spec.test, spec.seeds) == ("grid", "every", [])


def test_the_quickstart_search_file_is_a_sampled_search_over_seeds():
    spec = load_sweep(REPO / "configs" / "sweeps" / "quickstart_lr.yaml")
    assert (spec.sampler, spec.pruner, spec.test, spec.seeds, spec.n_trials) == ("tpe", "median", "best", [0, 1, 2], 12)
    (parameter,) = spec.search.values()
    assert (parameter.type, parameter.log, parameter.low, parameter.high) == ("float", True, 1e-3, 1e-1)


def test_seed_statistics_give_the_t_interval_and_a_paired_difference():
    result = spread([0.98, 0.99, 1.0])
    assert result.mean == pytest.approx(0.99) and result.std == pytest.approx(0.01)
    # t(0.975, 2) = 4.3027: half width 4.3027 * 0.01 / sqrt(3)
    assert result.half_width == pytest.approx(4.302653 * 0.01 / 3**0.5, rel=1e-5)
    assert spread([0.5]).percent() == "50.00% (1 run)"
    a = {0: 0.980, 1: 0.985, 2: 0.990, 3: 0.982}
    b = {0: 0.982, 1: 0.986, 2: 0.993, 3: 0.984, 9: 0.5}  # seed 9 has no partner: left out
    comparison = compare_paired(a, b)
    differences = [0.002, 0.001, 0.003, 0.002]
    assert comparison.seeds == (0, 1, 2, 3) and comparison.difference == pytest.approx(sum(differences) / 4)
    assert comparison.low > 0 and comparison.p_value < 0.05
    sentence = comparison.sentence("A", "B")
    assert sentence.startswith("B is better than A by 0.20 pp, 95% CI [") and "4 paired seeds" in sentence
    unclear = compare_paired({0: 0.98, 1: 0.99, 2: 0.97}, {0: 0.99, 1: 0.98, 2: 0.975})
    assert unclear.sentence("A", "B").startswith("No clear difference")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"model.optimizer.init_args.lrr": [0.1]}}, "model.optimizer.init_args.lrr"),
        ({"search": {"data.batch_sise": {"type": "int", "low": 8, "high": 64}}}, "data.batch_sise"),
        ({"search": {"model.optimizer.init_args.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "low 0.1 >= high"),
        (
            {"search": {"model.optimizer.init_args.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
            "includes 0",
        ),
        ({"grid": {"data.batch_size": []}}, "lists no values"),
        ({"grid": {"data.batch_size": [32]}, "sampler": "bayes"}, "sampler 'bayes'"),
        ({"grid": {"data.batch_size": [32]}, "pruner": "asha"}, "pruner 'asha'"),
        ({"grid": {"data.batch_size": [32]}, "colour": 1}, "unknown keys ['colour']"),
    ],
    ids=["grid key", "search key", "low >= high", "log from 0", "empty grid", "sampler", "pruner", "top-level key"],
)
def test_a_bad_sweep_file_is_one_error_line_and_writes_nothing(change, message, tmp_path, capsys):
    path = write_sweep(tmp_path, {"name": "bad", "config": QUICKSTART, **change})
    code, out, err = run_main("sweep", str(path), "--log_root", str(tmp_path / "logs"), capsys=capsys)
    assert code == 1, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "logs").exists()


def test_an_unreachable_storage_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path, {"name": "remote", "config": QUICKSTART, "grid": {"data.batch_size": [32]}})
    url = "postgresql://sweeper:secret@127.0.0.1:1/none"  # nothing listens on port 1
    code, _, err = run_main("sweep", str(path), "--log_root", str(tmp_path / "logs"), "--storage", url, capsys=capsys)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith("error: cannot reach the study storage postgresql://sweeper:***@127.0.0.1:1/none")
    assert "secret" not in line and not (tmp_path / "logs").exists()


def test_a_grid_runs_each_point_records_a_failed_one_and_continues_the_study_when_run_again(
    synthetic_data_dir, tmp_path, capsys
):
    spec = {
        "name": "tiny",
        "config": QUICKSTART,
        "overrides": TINY,
        "test": "every",
        "runs": {
            "small_batch": {"data.batch_size": 32},
            "broken": {"model.optimizer.init_args.lr": -1.0},  # a bad value: the trial fails with its error line
            # Tested on last.ckpt (there is no best), but it cannot be ranked on val/acc: the trial fails, saying so.
            "no_validation": {"data.val_split": 0},
        },
    }
    path = write_sweep(tmp_path, spec)
    logs = tmp_path / "logs"
    code, out, _ = run_main("sweep", str(path), "--log_root", str(logs), *tiny_run(synthetic_data_dir), capsys=capsys)
    assert code == 1  # one trial failed ...
    rows = {row["run"]: row for row in csv.DictReader((logs / "tiny" / "sweep.csv").open())}
    assert rows["broken"]["status"].startswith("failed (error: model.optimizer: Invalid learning rate: -1.0")
    assert rows["small_batch"]["status"] == "done"  # ... and the others still ran
    small = read_record(logs / "tiny" / "small_batch" / "version_0")
    assert small["recipe"]["batch_size"] == 32
    assert rows["small_batch"]["test acc"] == f"{100 * small['test']['test/acc']:.2f}% (1 run)"
    assert rows["small_batch"]["best val acc"] == f"{100 * small['best']['val/acc']:.2f}% (1 run)"
    unvalidated = read_record(logs / "tiny" / "no_validation" / "version_0")
    assert unvalidated["test"]["checkpoint"] == "checkpoints/last.ckpt"
    assert (
        rows["no_validation"]["status"].startswith("failed (the run ")
        and "cannot be ranked" in rows["no_validation"]["status"]
    )
    assert rows["no_validation"]["test acc"] == f"{100 * unvalidated['test']['test/acc']:.2f}% (1 run)"
    assert "The test set was used for every run" in (logs / "tiny" / "sweep.md").read_text()
    trials = list(csv.DictReader((logs / "tiny" / "trials.csv").open()))
    assert sorted(trial["state"] for trial in trials) == ["COMPLETE", "FAIL", "FAIL"]

    code, _, _ = run_main("sweep", str(path), "--log_root", str(logs), *tiny_run(synthetic_data_dir), capsys=capsys)
    rows = {row["run"]: row for row in csv.DictReader((logs / "tiny" / "sweep.csv").open())}
    assert rows["small_batch"]["status"] == "done (skipped)" and code == 1
    assert not (logs / "tiny" / "small_batch" / "version_1").exists()
    assert len(load_study(logs, "tiny").trials) == 3  # the failed point is kept, not run again


def test_a_search_over_seeds_tests_only_the_best_configuration(synthetic_data_dir, tmp_path, capsys):
    spec = {
        "name": "search",
        "config": QUICKSTART,
        "overrides": TINY,
        "search": {"model.scheduler.init_args.max_lr": {"type": "float", "low": 0.001, "high": 0.05, "log": True}},
        "seeds": [0, 1],
        "n_trials": 3,
        "sampler": "random",
        "pruner": "median",
    }
    logs = tmp_path / "logs"
    path = write_sweep(tmp_path, spec)
    code, out, err = run_main("sweep", str(path), "--log_root", str(logs), *tiny_run(synthetic_data_dir), capsys=capsys)
    assert code == 0, err[-3000:]
    study = load_study(logs, "search")
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3
    assert all(trial.intermediate_values for trial in study.trials)  # the first seed reported every epoch
    best = max(study.trials, key=lambda trial: trial.value)
    tested = []
    for trial in study.trials:
        seeds = [trial.user_attrs[f"run_{index}"] for index in range(2)]
        assert [run["seed"] for run in seeds] == [0, 1]
        records = [read_record(Path(run["run"])) for run in seeds]
        assert [record["recipe"]["seed"] for record in records] == ["0", "1"]
        assert trial.value == pytest.approx(sum(record["best"]["val/acc"] for record in records) / 2)
        tested += [trial.number] * sum(record["test"] is not None for record in records)
    assert tested == [best.number, best.number]  # only the winner, over both its seeds
    summary = (logs / "search" / "sweep.md").read_text()
    assert f"Only the best configuration on val/acc, `{best.user_attrs['name']}`, was tested" in summary
    assert "95% CI [" in summary and (logs / "search" / "plots" / "optimization_history.png").is_file()


def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def sweep_command(path: Path, logs: Path, data_dir: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_cnn",
        "sweep",
        str(path),
        "--log_root",
        str(logs),
        *options,
        *tiny_run(data_dir),
    ]


def lr_search(name: str, n_trials: int = 4) -> dict:
    """A TPE search over the quickstart's one-cycle max_lr on the tiny data."""
    return {
        "name": name,
        "config": QUICKSTART,
        "overrides": TINY,
        "search": {"model.scheduler.init_args.max_lr": {"type": "float", "low": 0.001, "high": 0.05, "log": True}},
        "n_trials": n_trials,
        "sampler": "tpe",
    }


def assert_exactly_n_trials_none_duplicated(study: optuna.Study, n_trials: int) -> None:
    counted = [trial for trial in study.trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == n_trials
    assert not [trial for trial in study.trials if trial.state in (TrialState.RUNNING, TrialState.WAITING)]
    configurations = [tuple(sorted(trial.params.items())) for trial in counted]
    assert len(set(configurations)) == len(configurations)


def test_two_workers_killed_with_sigkill_and_restarted_complete_exactly_n_trials(synthetic_data_dir, tmp_path):
    spec = lr_search("killed")
    path, logs = write_sweep(tmp_path, spec), tmp_path / "logs"
    command = sweep_command(path, logs, synthetic_data_dir, "--workers", "2")
    first = subprocess.Popen(
        command, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    journal = logs / "killed" / JOURNAL_FILE

    def one_done_and_one_running() -> bool:
        if not journal.is_file():
            return False
        trials = load_study(logs, "killed").trials
        running = [trial for trial in trials if trial.state == TrialState.RUNNING and trial.params]
        return any(trial.state == TrialState.COMPLETE for trial in trials) and bool(running)

    try:
        wait_for(one_done_and_one_running, 120, "a finished and a running trial")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and both workers, mid-trial
        first.wait()
    before = load_study(logs, "killed").trials
    stopped = [trial for trial in before if trial.state == TrialState.RUNNING]
    assert stopped
    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    study = load_study(logs, "killed")
    assert_exactly_n_trials_none_duplicated(study, 4)
    for trial in stopped:  # marked failed, and its configuration run again
        assert study.trials[trial.number].state == TrialState.FAIL
        (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
        assert retry.params == trial.params and retry.state == TrialState.COMPLETE


def test_two_workers_on_one_grid_never_run_a_point_twice(synthetic_data_dir, tmp_path):
    spec = {"name": "shared", "config": QUICKSTART, "overrides": TINY, "grid": {"data.batch_size": [16, 32, 48, 64]}}
    path, logs = write_sweep(tmp_path, spec), tmp_path / "logs"
    result = subprocess.run(
        sweep_command(path, logs, synthetic_data_dir, "--workers", "2"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_study(logs, "shared")
    assert sorted(trial.params["configuration"] for trial in study.trials) == sorted(load_sweep(path).configurations)
    assert {trial.state for trial in study.trials} == {TrialState.COMPLETE}
    workers = {trial.user_attrs["worker"] for trial in study.trials}
    assert len(workers) == 2  # both workers took trials


def test_compare_reports_the_paired_difference_of_two_configurations(tmp_path, capsys):
    from lightning_cnn.runs.record import new_record, write_record

    for name, accuracies in (("a", [0.980, 0.985, 0.990]), ("b", [0.983, 0.987, 0.994])):
        for seed, accuracy in enumerate(accuracies):
            record = new_record()
            record["recipe"], record["test"] = {"seed": str(seed)}, {"test/acc": accuracy}
            write_record(tmp_path / "logs" / name / f"version_{seed}", record)
    code, out, err = run_main("compare", "a", "b", "--log_root", str(tmp_path / "logs"), capsys=capsys)
    assert code == 0, err
    assert out.startswith("b is better than a by 0.30 pp, 95% CI [") and "3 paired seeds" in out
    code, _, err = run_main("compare", "a", "missing", "--log_root", str(tmp_path / "logs"), capsys=capsys)
    assert code == 1 and "missing does not exist" in err


def test_missing_sweep_file_is_a_clear_error(tmp_path):
    result = run_cli("sweep", "no_such_sweep.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "no_such_sweep.yaml does not exist" in result.stderr and "Traceback" not in result.stderr


def test_a_sweep_stopped_by_sigterm_runs_the_stopped_trial_again_when_started_again(
    synthetic_data_dir, tmp_path, capsys
):
    spec = {"name": "stopped", "config": QUICKSTART, "overrides": TINY, "grid": {"data.batch_size": [16, 32]}}
    path, logs = write_sweep(tmp_path, spec), tmp_path / "logs"
    stop = {"class_path": "conftest.SignalAtStep", "init_args": {"step": 2, "signum": int(signal.SIGTERM)}}
    arguments = ["sweep", str(path), "--log_root", str(logs), *tiny_run(synthetic_data_dir)]
    code, _, _ = run_main(*arguments, f"--trainer.callbacks+={json.dumps(stop)}", capsys=capsys)
    assert code == 128 + signal.SIGTERM
    trials = load_study(logs, "stopped").trials
    assert sorted(trial.state.name for trial in trials) == ["FAIL", "WAITING"]  # the other point not started
    (stopped,) = [trial for trial in trials if trial.state == TrialState.FAIL]
    assert "error" not in stopped.user_attrs
    code, _, err = run_main(*arguments, capsys=capsys)
    assert code == 0, err[-3000:]
    study = load_study(logs, "stopped")
    assert_exactly_n_trials_none_duplicated(study, 2)
    (retry,) = [trial for trial in study.trials if trial.user_attrs.get("retry_of") == stopped.number]
    assert retry.params == stopped.params and retry.state == TrialState.COMPLETE
