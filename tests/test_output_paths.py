"""Where results go: a predictions file that cannot be written is refused first; ``best`` stays inside its own run."""

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import make_synthetic_mnist, run_main


def write_config(root: Path, save_dir: str) -> Path:
    config = {
        "seed_everything": 0,
        "model": {"backbone": {"class_path": "lightning_cnn.models.TwoConvNet"}},
        "data": {"data_dir": str(make_synthetic_mnist(root / "data")), "batch_size": 50, "val_split": 100},
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": save_dir, "name": "outputs"},
            },
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("output", ["a_folder", "config.yaml/predictions.csv"])
def test_a_predictions_file_that_cannot_be_written_is_refused_before_predicting(output, tmp_path, capsys):
    config = write_config(tmp_path, str(tmp_path / "logs"))
    (tmp_path / "a_folder").mkdir()
    code, _, err = run_main(
        "predict", "--config", str(config), "--predictions.output", str(tmp_path / output), capsys=capsys
    )
    assert code == 1, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "--predictions.output" in error_lines[0]
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("version_*"))


def test_best_resolves_only_inside_its_own_run_folder(tmp_path, monkeypatch, capsys):
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir()
    monkeypatch.chdir(first)
    config = write_config(first, "logs")  # relative: the recorded best path is relative too
    assert run_main("fit", "--config", str(config), capsys=capsys)[0] == 0
    checkpoints = first / "logs" / "outputs" / "version_0" / "checkpoints"
    (best,) = checkpoints.glob("best*.ckpt")
    shutil.copytree(first, other)  # another log root holding a file at the same relative path
    best.unlink()

    monkeypatch.chdir(other)
    code, _, err = run_main(
        "test", "--config", str(config), "--trainer.logger.init_args.save_dir", str(first / "logs"),
        "--ckpt_path", "best", capsys=capsys,
    )  # fmt: skip
    assert code == 1, err[-3000:]
    assert "no longer in" in err and "--ckpt_path last" in err
