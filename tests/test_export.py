"""Export: a checkpoint as ONNX and TorchScript files whose logits match the checkpoint's on real MNIST digits."""

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_synthetic_mnist, run_cli

from lightning_cnn.models import BatchNormCNN

onnxruntime = pytest.importorskip("onnxruntime")


def real_test_batch(real_data_dir: Path, count: int) -> torch.Tensor:
    """The first ``count`` official test images, uint8 (count, 1, 28, 28)."""
    with gzip.open(real_data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") as file:
        pixels = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:count]
    return torch.from_numpy(pixels.copy())


def test_onnx_and_torchscript_match_the_checkpoint_on_real_mnist(real_data_dir, tmp_path):
    # BatchNormCNN: batch norm and dropout must export in inference mode.
    data_dir = make_synthetic_mnist(tmp_path / "synthetic")
    backbone = ("--model.backbone", "lightning_cnn.models.BatchNormCNN", "--model.backbone.width", "8")
    trained = run_cli(
        *("fit", *backbone, "--data.data_dir", str(data_dir), "--data.val_split", "100"),
        *("--trainer.max_steps", "4", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *("--trainer.logger.init_args.save_dir", str(tmp_path / "logs")),
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = tmp_path / "logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"

    # The architecture comes from the checkpoint, as for test and predict; the config gives data.mean/std.
    exported = run_cli(
        "export", *backbone, "--ckpt_path", str(checkpoint), "--output_dir", str(tmp_path / "export"), cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["export.json", "model.onnx", "model.pt"]
    metadata = json.loads((tmp_path / "export" / "export.json").read_text())

    images = (real_test_batch(real_data_dir, 257).float() / 255 - metadata["mean"]) / metadata["std"]
    network = BatchNormCNN(width=8).eval()
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    network.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    with torch.no_grad():
        expected = network(images)

    # A batch size never seen at export: the batch axis is dynamic.
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run([metadata["output"]["name"]], {metadata["input"]["name"]: images.numpy()})
    assert onnx_logits.shape == (257, 10)
    assert np.abs(onnx_logits - expected.numpy()).max() < 1e-4

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        scripted = torch.jit.load(str(tmp_path / "export" / "model.pt"))
    with torch.no_grad():
        assert (scripted(images) - expected).abs().max() < 1e-4
    # The logits vary from image to image, so matching them is not matching a constant.
    assert not torch.allclose(expected, expected[:1].expand_as(expected), atol=1e-3)
