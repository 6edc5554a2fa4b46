"""The sweep command: one process and folder per run, a failed run does not stop the others, re-runs skip."""

import csv

import yaml
from conftest import REPO, run_cli

from lightning_cnn.runs.summary import collect_runs
from lightning_cnn.tools.sweep import load_sweep


def write_sweep(tmp_path, spec):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_expands_to_the_cartesian_product(tmp_path):
    path = write_sweep(
        tmp_path,
        {"config": "a.yaml", "grid": {"data.batch_size": [10, 64], "model.optimizer.init_args.lr": [0.1, 0.01]}},
    )
    name, configs, runs = load_sweep(path)
    assert name == "sweep" and configs == ["a.yaml"]
    assert [run.overrides for run in runs] == [
        {"data.batch_size": 10, "model.optimizer.init_args.lr": 0.1},
        {"data.batch_size": 10, "model.optimizer.init_args.lr": 0.01},
        {"data.batch_size": 64, "model.optimizer.init_args.lr": 0.1},
        {"data.batch_size": 64, "model.optimizer.init_args.lr": 0.01},
    ]
    assert len({run.name for run in runs}) == 4


def test_overrides_apply_to_every_run_before_its_own(tmp_path):
    spec = {
        "config": "a.yaml",
        "overrides": {"trainer.max_epochs": 2, "data.batch_size": 32},
        "runs": {"plain": {}, "small": {"data.batch_size": 10}},
        "grid": {"model.optimizer.init_args.lr": [0.1]},
    }
    _, _, runs = load_sweep(write_sweep(tmp_path, spec))
    assert {run.name: run.overrides for run in runs} == {
        "plain": {"trainer.max_epochs": 2, "data.batch_size": 32},
        "small": {"trainer.max_epochs": 2, "data.batch_size": 10},
        "lr=0.1": {
            "trainer.max_epochs": 2,
            "data.batch_size": 32,
            "model.optimizer.init_args.lr": 0.1,
        },
    }


def test_seed000_grid_lists_the_tutorials_six_runs():
    _, configs, runs = load_sweep(REPO / "configs" / "sweeps" / "seed000_grid.yaml")
    assert configs == ["configs/seed000_two_conv.yaml"]
    assert [run.name for run in runs] == ["default", "batch10", "lr0.05", "lr0.1", "batch10_lr0.05", "batch10_lr0.005"]
    assert all(run.overrides["data.val_split"] == 5000 for run in runs)  # validated, unlike seed000_two_conv.yaml


def test_sweep_runs_each_override_set_records_failures_and_skips_finished_runs(synthetic_data_dir, tmp_path):
    spec = {
        "name": "tiny",
        "config": str(REPO / "configs" / "quickstart.yaml"),
        "runs": {
            "small_batch": {"data.batch_size": 32, "data.val_split": 100},
            "broken": {"data.batch_size": 0},
            "no_validation": {"data.val_split": 0},  # tested on last.ckpt: there is no best
        },
    }
    path = write_sweep(tmp_path, spec)
    common = [
        "--",
        f"--data.data_dir={synthetic_data_dir}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.enable_progress_bar=false",
    ]
    first = run_cli("sweep", str(path), "--log_root", str(tmp_path / "logs"), *common, cwd=tmp_path)
    assert first.returncode == 1  # one run failed ...
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "logs" / "tiny" / "sweep.csv").open())}
    assert rows["broken"]["status"].startswith("failed (fit")
    assert rows["small_batch"]["status"] == "done"  # ... and the other still finished
    logged = {run.run: run for run in collect_runs(tmp_path / "logs")}
    run = logged["tiny/small_batch/version_0"]
    assert run.batch_size == 32
    assert rows["small_batch"]["test acc"] == f"{100 * run.test_acc:.2f}%"
    assert rows["small_batch"]["best val acc"] == f"{100 * run.best_val_acc:.2f}%"
    assert rows["no_validation"]["status"] == "done" and rows["no_validation"]["best val acc"] == "n/a"
    assert rows["no_validation"]["test acc"] == f"{100 * logged['tiny/no_validation/version_0'].test_acc:.2f}%"

    second = run_cli("sweep", str(path), "--log_root", str(tmp_path / "logs"), *common, cwd=tmp_path)
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "logs" / "tiny" / "sweep.csv").open())}
    assert rows["small_batch"]["status"] == "done (skipped)"
    assert not (tmp_path / "logs" / "tiny" / "small_batch" / "version_1").exists()
    assert second.returncode == 1


def test_missing_sweep_file_is_a_clear_error(tmp_path):
    result = run_cli("sweep", "no_such_sweep.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "no_such_sweep.yaml does not exist" in result.stderr and "Traceback" not in result.stderr
