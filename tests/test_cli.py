"""The command line as users run it: every config trains, checkpoints are tested, bad input is refused clearly."""

from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, run_cli
from glyphs import CLASSES, write_dataset, write_image_folder
from torchvision.datasets import MNIST

from lightning_cnn import ImageClassifier
from lightning_cnn.models import TwoConvNet

EXPERIMENTS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").glob("*.yaml"))
CPU_PRESETS = ["configs/trainer/cpu.yaml", "configs/trainer/debug.yaml", "configs/trainer/bf16_mixed.yaml"]
ALL_PRESETS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs" / "trainer").glob("*.yaml"))


def config_args(*configs: str) -> list[str]:
    return [arg for config in configs for arg in ("--config", str(REPO / config))]


def experiment_data(experiment: str, mnist_dir: Path, root: Path) -> list[str]:
    """Tiny synthetic data in the format of the dataset the config names: MNIST-family IDX files, or a PNG folder."""
    data = yaml.safe_load((REPO / experiment).read_text()).get("data") or {}
    options = data.get("init_args", data)
    if str(data.get("class_path", "")).endswith("ImageFolderDataModule"):
        images = write_image_folder(root / "images", per_class=30, seed=0)
        return ["--data.train_root", str(images), f"--model.backbone.init_args.num_classes={len(CLASSES)}"]
    dataset = options.get("dataset", "MNIST")
    if dataset == "MNIST":
        return synthetic(mnist_dir)
    write_dataset(root / "data", dataset, options.get("emnist_split", "balanced"))
    return synthetic(root / "data")


def synthetic(data_dir: Path) -> list[str]:
    """Point a config at the 600-image synthetic dataset (the configs' 5,000-image validation split would not fit)."""
    return ["--data.data_dir", str(data_dir), "--data.val_split", "100"]


def test_help_lists_the_subcommands(tmp_path):
    # The smoke test of `python -m lightning_cnn` in a real process; the other CLI tests run in-process.
    result = run_cli("--help", cwd=tmp_path, subprocess_=True)
    assert result.returncode == 0
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in result.stdout


def test_print_config_resolves_an_experiment(tmp_path):
    result = run_cli("fit", *config_args("configs/seed000_two_conv.yaml"), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["backbone"]["class_path"] == "lightning_cnn.models.TwoConvNet"
    assert config["model"]["optimizer"]["init_args"]["momentum"] == 0.5
    assert config["data"]["class_path"].endswith("MNISTDataModule")  # the default data module
    assert config["data"]["init_args"]["batch_size"] == 64


@pytest.mark.parametrize("val_split", ["0.1", "5000", "0"])
def test_a_split_is_saved_as_given_so_the_saved_config_reproduces_the_run(val_split, tmp_path):
    result = run_cli(
        "fit", *config_args("configs/quickstart.yaml"), "--data.val_split", val_split, "--print_config", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load(result.stdout)["data"]["init_args"]["val_split"]
    assert saved == yaml.safe_load(val_split) and type(saved) is type(yaml.safe_load(val_split))
    config = tmp_path / "saved.yaml"
    config.write_text(result.stdout)
    again = run_cli("fit", "--config", str(config), "--print_config", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(again.stdout)["data"]["init_args"]["val_split"] == saved


def fit_one_batch(*configs: str, data_dir: Path, cwd: Path) -> None:
    result = run_cli("fit", *config_args(*configs), "--trainer.fast_dev_run", "true", *synthetic(data_dir), cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_fits_one_batch(experiment, synthetic_data_dir, tmp_path):
    data = experiment_data(experiment, synthetic_data_dir, tmp_path)
    result = run_cli("fit", *config_args(experiment), "--trainer.fast_dev_run", "true", *data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_cpu_trainer_presets_stack_on_an_experiment(preset, synthetic_data_dir, tmp_path):
    fit_one_batch("configs/quickstart.yaml", preset, data_dir=synthetic_data_dir, cwd=tmp_path)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_every_trainer_preset_parses(preset, tmp_path):
    result = run_cli("fit", *config_args("configs/quickstart.yaml", preset), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def evaluate(checkpoint: Path, data_dir: Path, mean: float = 0.1307, std: float = 0.3081) -> float:
    """Accuracy on the test file, computed without Lightning, the DataModule or torchmetrics."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    backbone = TwoConvNet()
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    backbone.eval()
    test = MNIST(data_dir, train=False)
    images = (test.data.float().unsqueeze(1) / 255 - mean) / std
    with torch.no_grad():
        predictions = backbone(images).argmax(dim=1)
    return (predictions == test.targets).float().mean().item()


def test_fit_then_test_best_reports_the_accuracy_of_the_saved_weights(synthetic_data_dir, tmp_path):
    common = [
        *config_args("configs/quickstart.yaml"),
        "--data.data_dir",
        str(synthetic_data_dir),
        "--data.val_split",
        "100",
        "--data.batch_size",
        "50",
    ]
    fit = run_cli("fit", *common, "--trainer.max_epochs", "2", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "hparams.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    best = [p for p in (run_dir / "checkpoints").glob("best-*.ckpt")]
    assert len(best) == 1

    test = run_cli("test", *common, "--ckpt_path", "best", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert best[0].name in test.stdout + test.stderr
    # The test run logs into the trained run's folder, beside its config, not a new version.
    assert (run_dir / "config_test.yaml").is_file()
    assert not (tmp_path / "lightning_logs" / "quickstart" / "version_1").exists()
    reported = next(line for line in test.stdout.splitlines() if "test/acc" in line)
    reported_accuracy = float(reported.replace("│", " ").split()[1])
    assert reported_accuracy == pytest.approx(evaluate(best[0], synthetic_data_dir), abs=1e-6)
    assert reported_accuracy > 0.5  # the synthetic digits are easy; chance is 0.1

    # A checkpoint file of the run, named by path, also logs into that run.
    by_path = run_cli("test", *common, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert by_path.returncode == 0, by_path.stderr[-3000:]
    assert not (tmp_path / "lightning_logs" / "quickstart" / "version_1").exists()


def test_rerunning_fit_makes_a_new_version_and_never_fails_on_an_existing_config(synthetic_data_dir, tmp_path):
    args = [
        "fit",
        *config_args("configs/quickstart.yaml"),
        *synthetic(synthetic_data_dir),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    for _ in range(2):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "lightning_logs" / "quickstart").iterdir())
    assert runs == ["version_0", "version_1"]


def test_predict_returns_classes_and_probabilities(synthetic_data_dir):
    from lightning_cnn.data import MNISTDataModule

    model = ImageClassifier(TwoConvNet())
    datamodule = MNISTDataModule(data_dir=synthetic_data_dir, eval_batch_size=32)
    datamodule.setup("predict")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.predict_dataloader())), 0)
    output = model.predict_step(batch, 0)
    assert output["prediction"].shape == (32,)
    torch.testing.assert_close(output["probabilities"].sum(dim=1), torch.ones(32))
    assert torch.equal(output["probabilities"].argmax(dim=1), output["prediction"])


BAD_INPUTS = [
    (["--model.backbone", "lightning_cnn.models.NoSuchNet"], "NoSuchNet"),
    (["--data.batch_size", "-3"], "batch_size"),
    (["--data.batch_size", "many"], "batch_size"),
    (["--trainer.max_epochs", "ten"], "max_epochs"),
    (["--data.val_split", "1.5"], "val_split"),
    (["--config", "configs/no_such_file.yaml"], "no_such_file.yaml"),
    (["--model.no_such_option", "1"], "no_such_option"),
]


@pytest.mark.parametrize(("args", "named"), BAD_INPUTS)
def test_bad_config_fails_with_a_clear_message(args, named, tmp_path):
    result = run_cli("fit", *config_args("configs/quickstart.yaml"), *args, cwd=tmp_path)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_test_with_best_before_any_training_says_what_to_do(tmp_path):
    result = run_cli("test", *config_args("configs/quickstart.yaml"), "--ckpt_path", "best", cwd=tmp_path)
    assert result.returncode == 1
    assert "no run under" in result.stderr and "fit" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("version", "shown"), [(None, "version_0"), (3, "version_3"), ("seed_7", "seed_7")])
def test_progress_bar_names_the_run_folder(tmp_path, version, shown):
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_cnn.callbacks.progress_bar import RunProgressBar

    bar = RunProgressBar()
    logger = TensorBoardLogger(tmp_path, name="run", version=version)
    trainer = Trainer(logger=logger, callbacks=[bar], enable_checkpointing=False, enable_model_summary=False)
    metrics = bar.get_metrics(trainer, ImageClassifier(TwoConvNet()))
    assert metrics.get("run") == shown and "v_num" not in metrics
    assert Path(logger.log_dir).name == shown  # the folder Lightning really writes


def test_fit_without_validation_keeps_last_only_and_test_uses_it(synthetic_data_dir, tmp_path):
    common = [*config_args("configs/quickstart.yaml"), *synthetic(synthetic_data_dir), "--data.val_split", "0"]
    fit = run_cli("fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert "zero" not in fit.stderr  # Lightning's warning about an empty validation loader is not shown
    assert "litlogger" not in fit.stdout + fit.stderr  # nor its advertisement for a cloud logger
    files_before = sorted(run_dir.rglob("*"))

    best = run_cli("test", *common, "--ckpt_path", "best", cwd=tmp_path)
    assert best.returncode == 1
    assert "trained without validation" in best.stderr and "--ckpt_path last" in best.stderr
    validate = run_cli("validate", *common, "--ckpt_path", "last", cwd=tmp_path)
    assert validate.returncode == 1 and "nothing to validate" in validate.stderr
    assert "Traceback" not in best.stderr + validate.stderr
    assert sorted(run_dir.rglob("*")) == files_before  # neither wrote anything

    test = run_cli("test", *common, "--ckpt_path", "last", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    reported = next(line for line in test.stdout.splitlines() if "test/acc" in line)
    assert float(reported.replace("│", " ").split()[1]) == pytest.approx(
        evaluate(run_dir / "checkpoints" / "last.ckpt", synthetic_data_dir), abs=1e-6
    )
