"""Every run gets its own folder, claimed atomically, however many start at the same moment."""

import multiprocessing
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import make_synthetic_mnist, run_main

from lightning_cnn.runs.folders import claim_run_folder


def _claim(experiment_dir: Path, barrier, results) -> None:  # noqa: ANN001
    barrier.wait()  # all processes ask at the same moment
    results.put(claim_run_folder(experiment_dir))


def test_processes_claiming_at_once_each_get_their_own_folder(tmp_path):
    context = multiprocessing.get_context("fork")
    processes_per_round, rounds = 8, 25
    for round_ in range(rounds):
        experiment_dir = tmp_path / f"round{round_}" / "experiment"
        if round_ % 2:
            (experiment_dir / "version_3").mkdir(parents=True)  # numbering continues after existing runs
        barrier, results = context.Barrier(processes_per_round), context.Queue()
        workers = [context.Process(target=_claim, args=(experiment_dir, barrier, results)) for _ in range(8)]
        for worker in workers:
            worker.start()
        versions = sorted(results.get(timeout=60) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0
        first = 4 if round_ % 2 else 0
        assert versions == list(range(first, first + processes_per_round))
        assert sorted(p.name for p in experiment_dir.iterdir()) == sorted(
            [f"version_{v}" for v in versions] + (["version_3"] if round_ % 2 else [])
        )


def write_config(root: Path) -> Path:
    config = {
        "seed_everything": 0,
        "model": {"backbone": {"class_path": "lightning_cnn.models.TwoConvNet"}},
        "data": {"data_dir": str(make_synthetic_mnist(root / "data")), "batch_size": 50, "val_split": 100},
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root / "logs"), "name": "together"},
            },
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fits_started_together_write_into_separate_run_folders(tmp_path):
    config = write_config(tmp_path)
    command = [sys.executable, "-m", "lightning_cnn", "fit", "--config", str(config)]
    processes = [
        subprocess.Popen([*command, "--seed_everything", str(seed)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        for seed in range(3)
    ]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    runs = sorted((tmp_path / "logs" / "together").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1", "version_2"]
    seeds = set()
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer per folder
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run / "checkpoints").glob("best*.ckpt"))) == 1
        saved = yaml.safe_load((run / "config.yaml").read_text())
        seeds.add(saved["seed_everything"])
        # The claimed number is not pinned in the saved config: running it again starts a new run.
        assert saved["trainer"]["logger"]["init_args"]["version"] is None
    assert seeds == {0, 1, 2}


def test_a_command_that_fails_leaves_no_claimed_folder(tmp_path, capsys):
    config = write_config(tmp_path)
    code, _, err = run_main("fit", "--config", str(config), "--data.val_split", "100000", capsys=capsys)
    assert code == 1, err
    assert not list((tmp_path / "logs").rglob("version_*"))
