"""Mixed precision presets: they stack with any experiment and device preset, compute in the reduced type,
and bf16-mixed trains on the CPU to the accuracy of full precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, logged, make_synthetic_mnist, run_cli
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

TESTS = Path(__file__).resolve().parent
CONFIGS = REPO / "configs"
QUICKSTART = str(CONFIGS / "quickstart.yaml")
PRESETS = {
    "cpu": "cpu.yaml",
    "gpu": "gpu.yaml",
    "ddp_cpu": "ddp_cpu.yaml",
    "bf16": "bf16_mixed.yaml",
    "16": "16_mixed.yaml",
}


class DtypeProbe(Callback):
    """Writes the output types of every convolution and linear layer during training steps, and the parameter types."""

    def __init__(self, out_file: str) -> None:
        self.out_file = Path(out_file)
        self.in_step = False
        self.output_dtypes: set[str] = set()

    def _record(self, module: nn.Module, inputs: object, output) -> None:  # noqa: ANN001
        if self.in_step:
            self.output_dtypes.add(str(output.dtype))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for module in pl_module.backbone.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.register_forward_hook(self._record)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self.in_step = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self.in_step = False

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {
            "precision": trainer.precision,
            "layer_output_dtypes": sorted(self.output_dtypes),
            "parameter_dtypes": sorted({str(parameter.dtype) for parameter in pl_module.parameters()}),
        }
        self.out_file.write_text(json.dumps(record))


def preset(name: str) -> list[str]:
    return ["--config", str(CONFIGS / "trainer" / PRESETS[name])]


def probe_config(tmp_path: Path, name: str) -> list[str]:
    """A config file that attaches DtypeProbe, writing to ``tmp_path/<name>.json``."""
    probe = {"class_path": "test_precision.DtypeProbe", "init_args": {"out_file": str(tmp_path / f"{name}.json")}}
    path = tmp_path / f"{name}_probe.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [probe]}}))
    return ["--config", str(path)]


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        (["cpu", "bf16"], {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed"}),
        (["bf16", "cpu"], {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed"}),
        (["16", "ddp_cpu"], {"accelerator": "cpu", "devices": 2, "precision": "16-mixed"}),
        (["ddp_cpu", "bf16"], {"accelerator": "cpu", "devices": 2, "precision": "bf16-mixed"}),
    ],
)
def test_precision_presets_stack_with_device_presets_in_any_order(tmp_path, stack, expected):
    args = [arg for name in stack for arg in preset(name)]
    result = run_cli("fit", "--config", QUICKSTART, *args, "--print_config", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load(result.stdout)
    assert {key: config["trainer"][key] for key in expected} == expected
    assert config["model"]["backbone"]["class_path"].endswith("TwoConvNet")  # the experiment is kept


@pytest.mark.parametrize(
    ("name", "device", "precision", "dtype"),
    [
        ("bf16", "cpu", "bf16-mixed", "torch.bfloat16"),
        # Lightning has no fp16 autocast on CPUs: it warns and runs bf16-mixed instead.
        ("16", "cpu", "bf16-mixed", "torch.bfloat16"),
        pytest.param("16", "gpu", "16-mixed", "torch.float16", marks=pytest.mark.gpu),
        pytest.param("bf16", "gpu", "bf16-mixed", "torch.bfloat16", marks=pytest.mark.gpu),
    ],
)
def test_mixed_precision_presets_compute_in_the_reduced_type(tmp_path, name, device, precision, dtype):
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    data_dir = make_synthetic_mnist(tmp_path / "data")
    result = run_cli(
        "fit", "--config", QUICKSTART, *preset(name), *preset(device), *probe_config(tmp_path, name),
        "--data.data_dir", str(data_dir), "--data.val_split", "100",
        "--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", "logs",
        cwd=tmp_path, timeout=90, env={"PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["precision"] == precision
    assert record["layer_output_dtypes"] == [dtype]  # every conv and linear layer ran in the reduced type
    assert record["parameter_dtypes"] == ["torch.float32"]  # the weights stay in full precision


def final_val_accuracy(run_dir: Path) -> float:
    return logged(run_dir, "val/acc")[-1]


# Measured on this recipe (quickstart, 50 steps of 128 images, validation on 5000; 2-core AMD EPYC):
# fp32 ends at 92.90 / 90.74 / 91.44% with seeds 0 / 1 / 2 (a 2.2-point spread), bf16-mixed at
# 92.84 / 90.94% with seeds 0 / 1, i.e. 0.06 and 0.20 points from fp32 at the same seed. The tolerance,
# 1 point, is 5x the largest same-seed gap yet under half the seed-to-seed spread, so bf16 that learned
# measurably worse (or not in bf16 at all, checked apart) would fail.
TOLERANCE = 0.01
TRAIN_STEPS = 50


@pytest.mark.slow
def test_bf16_mixed_trains_to_the_accuracy_of_fp32_on_real_mnist(real_data_dir, tmp_path):
    accuracy = {}
    for precision in ("32-true", "bf16-mixed"):
        result = run_cli(
            "fit", "--config", QUICKSTART, *preset("cpu"), *probe_config(tmp_path, precision),
            "--data.data_dir", str(real_data_dir),
            "--trainer.precision", precision,
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(TRAIN_STEPS),
            "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", "logs", "--trainer.logger.init_args.name", precision,
            cwd=tmp_path, timeout=180, env={"PYTHONPATH": str(TESTS)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        [run] = (tmp_path / "logs" / precision).iterdir()
        accuracy[precision] = final_val_accuracy(run)
    probes = {p: json.loads((tmp_path / f"{p}.json").read_text()) for p in accuracy}
    assert probes["32-true"]["layer_output_dtypes"] == ["torch.float32"]
    assert probes["bf16-mixed"]["layer_output_dtypes"] == ["torch.bfloat16"]  # the comparison is really bf16
    assert accuracy["32-true"] > 0.9, accuracy  # the short run learns, so the comparison means something
    assert abs(accuracy["bf16-mixed"] - accuracy["32-true"]) <= TOLERANCE, accuracy
