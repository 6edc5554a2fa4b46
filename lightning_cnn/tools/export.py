"""``python -m lightning_cnn export``: a trained checkpoint as ONNX (dynamic batch axis) and TorchScript files.

Both files map normalized images, float32 of shape (batch, 1, 28, 28), to logits. Normalized means
``(pixel / 255 - mean) / std`` with the experiment's ``data.mean`` and ``data.std``; ``export.json``
beside the files records them, with the input and output names. Each file is checked against the
checkpoint's own logits before it is put in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.imports import RequirementCache

from lightning_cnn.checkpoints import load_checkpoint, validate_checkpoint
from lightning_cnn.cli import CNNLightningCLI, config_tool
from lightning_cnn.errors import UserError
from lightning_cnn.module import ImageClassifier
from lightning_cnn.runs.checkpoints import resolve_run_checkpoint

ONNX_FILENAME, TORCHSCRIPT_FILENAME, METADATA_FILENAME = "model.onnx", "model.pt", "export.json"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# Largest logit difference accepted between an exported file and the checkpoint's model.
TOLERANCE = 1e-4


class ExportCLI(CNNLightningCLI):
    """The experiment's config (model, data) plus the checkpoint to export and where to put the files."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str, required=True, help="a .ckpt file, 'best' or 'last'")
        parser.add_argument("--output_dir", type=str, default="export", help="folder for the exported files")
        parser.add_argument("--opset", type=PositiveInt, default=17, help="ONNX opset version")

    def parse_arguments(self, parser: LightningArgumentParser, args: object) -> None:
        self.config = parser.parse_args(args)
        check_output_dir(Path(self.config.output_dir))  # before the checkpoint is read or anything is written
        resolve_run_checkpoint(self.config)
        # As LightningCLI does for test and predict: the model is built from the hyperparameters
        # saved in the checkpoint, so the config need not repeat the architecture.
        hparams = dict(load_checkpoint(self.config.ckpt_path).get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if hparams:
            self.config = parser.parse_object({"model": hparams}, self.config)

    def instantiate_trainer(self, **kwargs: object) -> None:
        return None  # exporting needs the model only (and a GPU preset must not demand a GPU here)


def check_output_dir(output_dir: Path) -> None:
    """Raise a UserError unless ``output_dir`` is a folder, or can be created as one, that can be written to."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(
            f"--output_dir {output_dir} is a file, not a folder; pass the path of a folder (it is created if missing)"
        )
    existing = output_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"--output_dir {output_dir} cannot be created: {existing} is a file, not a folder; pass another folder path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"--output_dir {output_dir} cannot be written: no permission to write in {existing}; "
            "pass a folder you can write to"
        )


def _remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) as long as they are empty: the ones an export created."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def export_model(model: ImageClassifier, output_dir: Path, mean: float, std: float, opset: int = 17) -> dict[str, Path]:
    """Write ``model.onnx``, ``model.pt`` and ``export.json`` into ``output_dir``; returns their paths.

    The files are written to a temporary folder inside ``output_dir``, checked, then moved in place,
    so a failed export leaves no partial files (and no folder that it created).

    Raises:
        UserError: ``output_dir`` is a file, or cannot be created or written to.
    """
    if not RequirementCache("onnx"):
        raise UserError("ONNX export needs the onnx package; install it with: pip install 'lightning_cnn[export]'")
    check_output_dir(output_dir)
    model = model.cpu().eval()
    image_shape = tuple(model.hparams.input_shape)
    example = torch.randn(3, *image_shape, generator=torch.Generator().manual_seed(0))
    created = [folder for folder in (output_dir, *output_dir.parents) if not folder.exists()]
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir))
    except OSError as error:
        _remove_empty_folders(created)
        raise UserError(
            f"--output_dir {output_dir} cannot be written ({error.strerror or error}); pass a folder you can write to"
        ) from None
    exported = False
    try:
        model.to_onnx(
            staging / ONNX_FILENAME,
            example,
            dynamo=False,  # the TorchScript-based exporter needs no onnxscript and handles every zoo network
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
        )
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still what many C++ and mobile runtimes load.
            warnings.simplefilter("ignore", FutureWarning)
            with torch.no_grad():
                traced = torch.jit.trace(model.backbone, example)
            torch.jit.save(traced, str(staging / TORCHSCRIPT_FILENAME))
        metadata = {
            "input": {"name": INPUT_NAME, "shape": ["batch", *image_shape], "dtype": "float32"},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", model.hparams.num_classes]},
            "preprocessing": "images = (pixels / 255 - mean) / std, pixels uint8 with light digits on black",
            "mean": mean,
            "std": std,
            "backbone": model.hparams.get("backbone"),
        }
        (staging / METADATA_FILENAME).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        verify_export(model, staging)
        paths = {}
        for name in (ONNX_FILENAME, TORCHSCRIPT_FILENAME, METADATA_FILENAME):
            os.replace(staging / name, output_dir / name)
            paths[name] = output_dir / name
        exported = True
        return paths
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not exported:
            _remove_empty_folders(created)


def verify_export(model: ImageClassifier, folder: Path, batch_size: int = 5) -> dict[str, float]:
    """Largest logit difference of each exported file from ``model`` on a batch of a size unseen at export."""
    images = torch.randn(batch_size, *model.hparams.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        expected = model(images)
        differences = {TORCHSCRIPT_FILENAME: (torch.jit.load(str(folder / TORCHSCRIPT_FILENAME))(images) - expected)}
    if RequirementCache("onnxruntime"):
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / ONNX_FILENAME), providers=["CPUExecutionProvider"])
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        differences[ONNX_FILENAME] = torch.from_numpy(logits) - expected
    else:
        import onnx

        onnx.checker.check_model(str(folder / ONNX_FILENAME))
    worst = {name: float(difference.abs().max()) for name, difference in differences.items()}
    for name, value in worst.items():
        if not value <= TOLERANCE:
            raise RuntimeError(f"exported {name} differs from the checkpoint by {value:.2e} (tolerance {TOLERANCE})")
    return worst


def main(args: list[str]) -> None:
    cli = config_tool(ExportCLI, "python -m lightning_cnn export", "Export a checkpoint to ONNX and TorchScript.", args)
    checkpoint = validate_checkpoint(cli.config.ckpt_path, cli.model)
    cli.model.load_state_dict(checkpoint["state_dict"])
    data = cli.datamodule
    paths = export_model(cli.model, Path(cli.config.output_dir), data.mean, data.std, cli.config.opset)
    print(f"exported {cli.config.ckpt_path} to " + ", ".join(str(path) for path in paths.values()))
