"""``explain``: the tutorials' layer arithmetic (sizes, parameter formulas, receptive fields) for any network."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch.nn.functional as F
from conftest import REPO, run_cli
from torch import nn

import lightning_cnn.models as zoo
from lightning_cnn.analysis import trace_network
from lightning_cnn.models import KerasConvNet, TwoConvNet, count_parameters

ZOO = [getattr(zoo, name) for name in zoo.__all__ if isinstance(getattr(zoo, name), type)]


class TutorialNet(nn.Module):
    """Seed 000's network exactly as its tutorial writes it: pooling, ReLU and the flatten are functions in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc = nn.Linear(320, 10)

    def forward(self, x):  # noqa: ANN001, ANN201 (as the tutorial writes it)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        return F.log_softmax(self.fc(x), dim=1)


class WrongSizeNet(nn.Module):
    """A network built for other images: its linear layer expects 100 features where 28x28 images give 784."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(100, 10)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.fc(self.flatten(x))


def explain(*args: str, cwd) -> subprocess.CompletedProcess:  # noqa: ANN001
    return run_cli("explain", *args, cwd=cwd)


def records(config: str, tmp_path, *extra: str) -> dict[str, dict]:  # noqa: ANN001
    result = explain("--config", str(REPO / "configs" / config), *extra, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    assert {"layer", "type", "output_shape", "parameters", "receptive_field", "jump", "flops"} <= set(rows[0])
    return {row["layer"]: row for row in rows}


def test_seed000_two_conv_sizes_and_parameters_match_the_tutorial(tmp_path):
    rows = records("seed000_two_conv.yaml", tmp_path)
    # The tutorial: 28 -> conv1 24 -> pool 12 -> conv2 8 -> pool 4, flattened to 4*4*20 = 320.
    shapes = {name: rows[name]["output_shape"] for name in ("conv1", "pool1", "conv2", "pool2", "flatten", "fc")}
    assert shapes == {
        "conv1": [10, 24, 24], "pool1": [10, 12, 12], "conv2": [20, 8, 8], "pool2": [20, 4, 4],
        "flatten": [320], "fc": [10],
    }  # fmt: skip
    assert [rows[name]["parameters"] for name in ("conv1", "conv2", "fc")] == [260, 5020, 3210]
    assert sum(row["parameters"] for row in rows.values()) == 8490
    # Two FLOPs per multiply-add: conv1 has 5*5*1 weights for each of its 10*24*24 outputs.
    assert rows["conv1"]["flops"] == 2 * 25 * 10 * 24 * 24

    table = explain("--config", str(REPO / "configs" / "seed000_two_conv.yaml"), cwd=tmp_path)
    assert table.returncode == 0, table.stderr[-3000:]
    for text in (
        "28 → 24 → 12 → 8 → 4, flatten 320",
        "(28 − 5 + 2·0)/1 + 1 = 24",
        "(24 − 2 + 2·0)/2 + 1 = 12",
        "(12 − 5 + 2·0)/1 + 1 = 8",
        "(5·5·1 + 1)·10 = 260",
        "(5·5·10 + 1)·20 = 5,020",
        "(320 + 1)·10 = 3,210",
        "8,490 parameters",
    ):
        assert text in table.stdout, text


def test_seed002_keras_parameter_formula_per_layer(tmp_path):
    rows = records("seed002_keras_conv.yaml", tmp_path)
    # The tutorial's formula: (kernel_size² × input_channels + 1) × output_channels; pooling and flatten have none.
    assert {name: rows[name]["parameter_formula"] for name in ("conv1", "conv2", "conv3", "fc")} == {
        "conv1": "(3·3·1 + 1)·32 = 320",
        "conv2": "(3·3·32 + 1)·64 = 18,496",
        "conv3": "(3·3·64 + 1)·128 = 73,856",
        "fc": "(1152 + 1)·10 = 11,530",
    }
    assert rows["pool1"]["parameters"] == rows["flatten"]["parameters"] == 0
    assert sum(row["parameters"] for row in rows.values()) == 104_202
    # 11 pixels pooled by 2: the floor is written out.
    assert rows["pool2"]["size_formula"] == "⌊(11 − 2 + 2·0)/2⌋ + 1 = 5"


def fields(network: nn.Module) -> dict[str, tuple[int, int]]:
    trace = trace_network(network, (1, 28, 28))
    return {row.layer: (row.field.receptive_field[0], row.field.jump[0]) for row in trace.rows}


def test_receptive_fields_follow_the_recurrence_worked_by_hand():
    # r' = r + (k - 1) * j and j' = j * s, from r = j = 1 at the input pixels.
    two_conv = fields(TwoConvNet())
    assert two_conv["conv1"] == (5, 1)  # 1 + (5 - 1) * 1
    assert two_conv["pool1"] == (6, 2)  # 5 + (2 - 1) * 1, jump 1 * 2
    assert two_conv["conv2"] == (14, 2)  # 6 + (5 - 1) * 2
    assert two_conv["pool2"] == (16, 4)  # 14 + (2 - 1) * 2, jump 2 * 2
    assert two_conv["relu2"] == (16, 4)  # element-wise: unchanged
    assert two_conv["fc"][0] == 28  # over the flattened 4x4 map: 16 + (4 - 1) * 4, the whole image

    keras = fields(KerasConvNet())
    assert keras["conv1"] == (3, 1)  # 1 + 2 * 1
    # 3 + 1 * 1 = 4 (the tutorial's text says 7x7 here; the recurrence gives 4, and 8 after conv2)
    assert keras["pool1"] == (4, 2)
    assert keras["conv2"] == (8, 2)  # 4 + 2 * 2
    assert keras["pool2"] == (10, 4)  # 8 + 1 * 2, jump 4
    assert keras["conv3"] == (18, 4)  # 10 + 2 * 4


@pytest.mark.parametrize("network_class", ZOO, ids=lambda cls: cls.__name__)
def test_every_zoo_network_is_explained(network_class):
    network = network_class()
    trace = trace_network(network, (1, 28, 28))
    assert sum(row.parameters for row in trace.rows) == trace.total_parameters == count_parameters(network)
    assert trace.rows[-1].output_shape == (10,)
    convolutions = [row for row in trace.rows if row.type == "Conv2d"]
    assert convolutions and all(row.size_formula and row.parameter_formula for row in convolutions)
    # Each layer sees at least as much of the image as the layer before it.
    areas = [row.field.area for row in trace.rows]
    assert areas == sorted(areas)


def test_a_users_own_module_by_class_path_gives_the_tutorial_numbers(tmp_path):
    rows = records("quickstart.yaml", tmp_path, "--model.backbone", "test_explain.TutorialNet")
    # Functional pooling and view in forward are layers too, and widen the receptive field as modules do.
    assert rows["max_pool2d"]["output_shape"] == [10, 12, 12] and rows["max_pool2d"]["receptive_field"] == 6
    assert rows["conv2"]["receptive_field"] == 14
    assert rows["max_pool2d #2"]["output_shape"] == [20, 4, 4] and rows["max_pool2d #2"]["receptive_field"] == 16
    assert rows["view"]["output_shape"] == [320]
    assert sum(row["parameters"] for row in rows.values()) == 8490


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_bad_input_is_one_error_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  backbone: [unclosed\n")
    unparsable = explain("--config", str(broken), cwd=tmp_path)
    assert unparsable.returncode != 0 and len(error_lines(unparsable)) == 1, unparsable.stderr
    wrong = explain(
        "--config", str(REPO / "configs" / "quickstart.yaml"), "--model.backbone", "test_explain.WrongSizeNet",
        cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    (line,) = error_lines(wrong)
    assert "WrongSizeNet cannot take images of shape (1, 28, 28)" in line


def test_table_piped_to_a_file_is_not_wrapped(tmp_path):
    """In a real process with stdout a pipe, as `explain ... > file` or `| tee`: one line per row, wide."""
    command = [
        sys.executable,
        "-m",
        "lightning_cnn",
        "explain",
        "--config",
        str(REPO / "configs" / "seed002_keras_conv.yaml"),
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 10 + 1  # header, rule, 10 layers, total
    assert len({len(line) for line in table}) == 1 and len(table[0]) > 100
