"""What a run leaves in TensorBoard: scalars by split, hparams with final metrics, graph, timing and images."""

from __future__ import annotations

import io
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import config_run_args, make_synthetic_mnist, read_events, run_cli
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.plugins.hparams import plugin_data_pb2

from lightning_cnn import ImageClassifier
from lightning_cnn.analysis.class_images import integrated_gradients
from lightning_cnn.callbacks.dashboard import Dashboard
from lightning_cnn.callbacks.figures import saliency_overlay
from lightning_cnn.callbacks.learning_rate import LearningRateLogger
from lightning_cnn.data import MNISTDataModule
from lightning_cnn.models import TwoConvNet

EPOCHS = 2
EPOCH_IMAGE_TAGS = {
    "train/inputs",
    "val/misclassified",
    "val/confusion_matrix",
    "filters/backbone.conv1",
    "feature_maps/input",
    "feature_maps/backbone.conv1",  # TwoConvNet's two convolutions
    "feature_maps/backbone.conv2",
    "val/accuracy_by_class",
}
TEST_IMAGE_TAGS = {"test/misclassified", "test/confusion_matrix", "test/accuracy_by_class", "test/reliability"}
FIT_END_IMAGE_TAGS = {"class_visualization", "val/reliability"}


def tiny_run_args(data_dir: Path, save_dir: Path, *extra: str) -> list[str]:
    # No cost limit (insight.time_budget 1): these tiny epochs cost less than their images.
    return config_run_args(
        "quickstart.yaml", data_dir, save_dir, "--trainer.log_every_n_steps", "1", "--insight.time_budget", "1", *extra
    )


@pytest.fixture(scope="module")
def fitted_and_tested_run(tmp_path_factory) -> Path:
    """quickstart.yaml (TwoConvNet, Adam + one-cycle) for 2 short epochs, then ``test --ckpt_path best``."""
    root = tmp_path_factory.mktemp("insight")
    data_dir = make_synthetic_mnist(root / "data")
    logs = root / "logs"
    # Throughput rates over 3 batches: these epochs have 3.
    fit_args = tiny_run_args(data_dir, logs, "--trainer.max_epochs", str(EPOCHS), "--throughput.window_size", "3")
    fit = run_cli("fit", *fit_args, cwd=root)
    assert fit.returncode == 0, fit.stderr[-3000:]
    test = run_cli("test", *tiny_run_args(data_dir, logs), "--ckpt_path", "best", cwd=root)
    assert test.returncode == 0, test.stderr[-3000:]
    return logs / "quickstart" / "version_0"


def test_scalars_are_grouped_by_split_with_the_learning_rate_and_training_time(fitted_and_tested_run):
    events = read_events(fitted_and_tested_run)
    scalars = set(events.Tags()["scalars"])
    for split in ("train", "val", "test"):
        assert {f"{split}/loss", f"{split}/acc"} <= scalars
    assert {"val/acc_best", "train/lr-Adam", "time/train_seconds", "time/insight_seconds"} <= scalars
    assert [event.value for event in events.Scalars("time/insight_skipped_epochs")] == [0]
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"):
        assert len(events.Scalars(tag)) == EPOCHS, tag
    # One-cycle steps every batch: one learning rate per training step, rising from max_lr / 25.
    learning_rates = [event.value for event in events.Scalars("train/lr-Adam")]
    assert len(learning_rates) == EPOCHS * 3
    assert learning_rates[0] == pytest.approx(0.01 / 25)
    (train_seconds,) = [event.value for event in events.Scalars("time/train_seconds")]
    (insight_seconds,) = [event.value for event in events.Scalars("time/insight_seconds")]
    assert 0 < insight_seconds < train_seconds


def test_every_image_kind_is_logged_once_per_epoch_and_once_per_test(fitted_and_tested_run):
    events = read_events(fitted_and_tested_run)
    assert set(events.Tags()["images"]) == EPOCH_IMAGE_TAGS | TEST_IMAGE_TAGS | FIT_END_IMAGE_TAGS
    for tag in EPOCH_IMAGE_TAGS:
        assert len(events.Images(tag)) == EPOCHS, tag
    for tag in TEST_IMAGE_TAGS | FIT_END_IMAGE_TAGS:
        assert len(events.Images(tag)) == 1, tag


def test_training_inputs_are_shown_de_normalized(fitted_and_tested_run):
    image = events_image(fitted_and_tested_run, "train/inputs")
    # 32 inputs, 8 per row, 28 px tiles with 2 px padding.
    assert image.size == (8 * 30 + 2, 4 * 30 + 2)
    # Synthetic digits: background pixels uniform in [0, 40), one 6x6 patch at 255. Back on the pixel
    # scale the first tile holds that patch and a background of median ~20; still normalized, the
    # background would be negative and show as 0.
    tile = image.convert("L").crop((2, 2, 30, 30))
    pixels = sorted(tile.getdata())
    assert pixels[-36] >= 250
    assert 12 <= pixels[len(pixels) // 2] <= 28


def events_image(run_dir: Path, tag: str) -> Image.Image:
    return Image.open(io.BytesIO(read_events(run_dir).Images(tag)[-1].encoded_image_string))


def test_hparams_tab_holds_the_recipe_and_the_final_metrics(fitted_and_tested_run):
    content = read_events(fitted_and_tested_run).PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {
        name: getattr(value, value.WhichOneof("kind")) for name, value in session.session_start_info.hparams.items()
    }
    assert hparams["architecture"] == "TwoConvNet"
    assert hparams["parameters"] == 8490
    assert (hparams["optimizer"], hparams["lr"], hparams["scheduler"]) == ("Adam", 0.01, "OneCycleLR")
    assert (hparams["batch_size"], hparams["max_epochs"], hparams["augmentation"]) == (128, EPOCHS, False)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"val/acc_best", "test/acc", "time/train_seconds"} <= metrics


def test_model_graph_is_logged(fitted_and_tested_run):
    events = read_events(fitted_and_tested_run)
    assert events.Tags()["graph"]
    node_names = [node.name for node in events.Graph().node]
    assert any("Conv2d" in name or "conv" in name.lower() for name in node_names)


def test_image_kinds_switch_off_in_yaml(tmp_path):
    data_dir = make_synthetic_mnist(tmp_path / "data")
    config = tmp_path / "quiet.yaml"
    config.write_text(
        "insight:\n  feature_maps: false\n  confusion_matrix: false\n  graph: false\n  per_class_accuracy: false\n"
        "  class_visualization: false\n  embeddings: false\n  explain: false\n  reliability: false\n"
    )
    args = tiny_run_args(data_dir, tmp_path / "logs", "--config", str(config), "--trainer.max_epochs", "1")
    result = run_cli("fit", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "logs" / "quickstart" / "version_0")
    assert set(events.Tags()["images"]) == {"train/inputs", "val/misclassified", "filters/backbone.conv1"}
    assert not events.Tags()["graph"]
    assert not any(tag.startswith("val/acc_class/") for tag in events.Tags()["scalars"])
    run_dir = tmp_path / "logs" / "quickstart" / "version_0"
    assert not (run_dir / "explain.md").exists() and not (run_dir / "projector_config.pbtxt").exists()


def fit_in_process(tmp_path: Path, insight: Dashboard, logger: TensorBoardLogger | bool, epochs: int) -> pl.Trainer:
    data = MNISTDataModule(make_synthetic_mnist(tmp_path / "data"), batch_size=32, val_split=100, download=False)
    model = ImageClassifier(TwoConvNet())
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        logger=logger,
        callbacks=[*insight.callbacks(), LearningRateLogger()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return trainer


def test_images_every_n_epochs(tmp_path):
    logger = TensorBoardLogger(tmp_path / "logs", name="every2", default_hp_metric=False)
    fit_in_process(tmp_path, Dashboard(every_n_epochs=2, time_budget=1, graph=False), logger, epochs=4)
    events = read_events(Path(logger.log_dir))
    for tag in EPOCH_IMAGE_TAGS:
        assert [image.step for image in events.Images(tag)] == [4, 8], tag  # after epochs 2 and 4 (2 steps each)


def test_time_budget_skips_epochs_once_the_images_cost_more_than_their_share(tmp_path):
    logger = TensorBoardLogger(tmp_path / "logs", name="budget", default_hp_metric=False)
    fit_in_process(tmp_path, Dashboard(time_budget=0, graph=False), logger, epochs=3)
    events = read_events(Path(logger.log_dir))
    for tag in EPOCH_IMAGE_TAGS:
        assert [image.step for image in events.Images(tag)] == [2], tag  # the first epoch only
    assert [event.value for event in events.Scalars("time/insight_skipped_epochs")] == [2]


def test_smoke_training_without_a_logger(tmp_path):
    """Smoke test: without a logger the callbacks stay idle (Lightning's own LR monitor would raise)."""
    trainer = fit_in_process(tmp_path, Dashboard(), logger=False, epochs=1)
    assert trainer.state.finished and trainer.global_step == 2


def test_per_class_accuracy_scalars_use_the_class_names_and_average_to_the_accuracy(fitted_and_tested_run):
    events = read_events(fitted_and_tested_run)
    scalars = set(events.Tags()["scalars"])
    assert {f"val/acc_class/{label}" for label in range(10)} <= scalars
    assert all(len(events.Scalars(f"val/acc_class/{label}")) == EPOCHS for label in range(10))
    per_class = [events.Scalars(f"test/acc_class/{label}")[-1].value for label in range(10)]
    # The synthetic test set holds 20 images of each class, so the mean of the classes is the accuracy.
    assert sum(per_class) / 10 == pytest.approx(events.Scalars("test/acc")[-1].value, abs=1e-6)


def test_class_visualization_is_one_grid_that_the_trained_network_reads_as_each_class(fitted_and_tested_run):
    image = events_image(fitted_and_tested_run, "class_visualization")
    saved = Image.open(fitted_and_tested_run / "class_visualization.png")
    tile = 28 * 2  # upscaled to at least 48 pixels
    assert image.size == saved.size == (10 * (tile + 2) + 2, tile + 4)
    # Back from the PNG to the network's input: each tile must score highest as its own class.
    pixels = torch.from_numpy(np.asarray(saved.convert("L"), dtype=np.float32) / 255)
    tiles = torch.stack(
        [pixels[2 : 2 + tile : 2, 2 + k * (tile + 2) : 2 + k * (tile + 2) + tile : 2] for k in range(10)]
    )
    model = ImageClassifier.load_from_checkpoint(fitted_and_tested_run / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        predicted = model((tiles.unsqueeze(1) - 0.1307) / 0.3081).argmax(dim=1)
    assert (predicted == torch.arange(10)).sum() >= 8, predicted.tolist()


def test_fit_writes_the_layer_table_into_the_run_folder(fitted_and_tested_run):
    table = (fitted_and_tested_run / "explain.md").read_text(encoding="utf-8")
    assert "28 → 24 → 12 → 8 → 4, flatten 320" in table and "8,490 parameters" in table
    assert "(5·5·1 + 1)·10 = 260" in table


def test_projector_gets_penultimate_features_with_sprites_and_labels(fitted_and_tested_run):
    assert "penultimate_features_backbone.fc" in (fitted_and_tested_run / "projector_config.pbtxt").read_text()
    (folder,) = [path.parent for path in fitted_and_tested_run.rglob("tensors.tsv")]
    rows = (folder / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 100 and len(rows[0].split("\t")) == 320  # the 100 validation images; fc reads 320
    labels = (folder / "metadata.tsv").read_text().split()
    assert len(labels) == 100 and set(labels) <= {str(label) for label in range(10)}
    assert (folder / "sprite.png").is_file()


def test_integrated_gradients_of_a_linear_network_are_input_times_weight():
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([2, 0])
    maps = integrated_gradients(network, images, targets, baseline=-1.0, steps=4)
    weights = network[1].weight.detach()[targets].view(2, 4, 4)
    assert torch.allclose(maps, ((images[:, 0] + 1) * weights).clamp_min(0), atol=1e-5)


def test_saliency_is_laid_over_the_misclassified_examples_in_red():
    images = torch.full((3, 1, 8, 8), 0.5)
    saliency = torch.zeros(3, 8, 8)
    saliency[:, 2, 3] = 1.0
    overlay = saliency_overlay(images, saliency)
    assert overlay.shape == (3, 3, 8, 8)
    red, green = overlay[:, 0], overlay[:, 1]
    assert torch.all(red[:, 2, 3] > green[:, 2, 3] + 0.5)  # the salient pixel is red
    assert torch.allclose(red[:, 0, 0], green[:, 0, 0])  # the others stay gray


def test_the_run_records_and_logs_flops_per_image_and_throughput(fitted_and_tested_run):
    from lightning_cnn.runs.record import read_record

    record = read_record(fitted_and_tested_run)
    # TwoConvNet by hand, 2 FLOPs per multiply-add: conv1 24·24·10·(5·5·1)·2 = 288,000, conv2
    # 8·8·20·(5·5·10)·2 = 640,000, fc 320·10·2 = 6,400.
    assert record["flops_per_image"]["forward"] == 288_000 + 640_000 + 6_400
    assert record["flops_per_image"]["train"] > 2 * record["flops_per_image"]["forward"]  # and the backward pass
    # Lightning's ThroughputMonitor: samples and FLOPs per second of training, the last rate in the record.
    events = read_events(fitted_and_tested_run)
    samples = [event.value for event in events.Scalars("train/device/samples_per_sec")]
    flops = [event.value for event in events.Scalars("train/device/flops_per_sec")]
    assert samples and all(rate > 0 for rate in samples)
    assert record["images_per_second"] == pytest.approx(samples[-1])
    # Its FLOPs are the measured training FLOPs per image times the (full) batches' images.
    assert flops[-1] / samples[-1] == pytest.approx(record["flops_per_image"]["train"], rel=1e-3)
    assert "perf/flops_per_image" in events.Tags()["scalars"]
