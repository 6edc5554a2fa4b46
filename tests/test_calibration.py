"""Expected calibration error is logged for validation and test, and matches a hand computation."""

from __future__ import annotations

import pytest
import torch
from conftest import config_run_args, read_events, run_main
from torch import nn

from lightning_cnn import ImageClassifier
from lightning_cnn.module import CALIBRATION_BINS


class FixedLogits(nn.Module):
    """Returns the logits it is given for each image index (the image's first pixel)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].long()]


def test_validation_ece_matches_a_hand_computation_on_a_small_batch():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.0, 0.1], [0.0, 0.0, 4.0], [2.0, 2.5, 0.0]])
    labels = torch.tensor([0, 2, 0, 2, 0])
    model = ImageClassifier(FixedLogits(logits), num_classes=3, input_shape=(1, 1, 1))
    images = torch.arange(5.0).view(5, 1, 1, 1)
    model.validation_step((images, labels), 0)
    ece = model.calibration["val_ece"].compute().item()

    # By hand: each image's top confidence and whether its prediction is right, in 15 equal-width bins;
    # ECE = sum over bins of (images in bin / all) * |mean confidence - accuracy|.
    probabilities = logits.softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).float()
    bins = torch.clamp((confidence * CALIBRATION_BINS).ceil().long() - 1, 0, CALIBRATION_BINS - 1)
    expected = 0.0
    for index in bins.unique():
        members = bins == index
        expected += members.float().mean().item() * abs(confidence[members].mean() - correct[members].mean()).item()
    assert ece == pytest.approx(expected, abs=1e-6)
    assert 0 < ece < 1


def test_fit_and_test_log_the_calibration_error(synthetic_data_dir, tmp_path, capsys):
    args = config_run_args("quickstart.yaml", synthetic_data_dir, tmp_path / "logs", "--trainer.max_epochs", "1")
    assert run_main("fit", *args, capsys=capsys)[0] == 0
    assert run_main("test", *args, "--ckpt_path", "last", capsys=capsys)[0] == 0
    scalars = set(read_events(tmp_path / "logs" / "quickstart" / "version_0").Tags()["scalars"])
    assert {"val/ece", "test/ece"} <= scalars
