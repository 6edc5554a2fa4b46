"""``python -m lightning_cnn ensemble --config X --checkpoints a.ckpt b.ckpt ...``: several checkpoints as one model.

Each member is a checkpoint of the config's network (a ``.ckpt`` file, or a run folder: its best
checkpoint, else its last); ``--runs <experiment folder>`` adds every run of an experiment (its
seeds). The members' softmax outputs are averaged on the test set; each member's accuracy and the
ensemble's are printed and logged to TensorBoard (run ``<experiment>/ensemble``) when the config logs there.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_cnn.checkpoints import validate_checkpoint
from lightning_cnn.cli import CNNLightningCLI, config_tool
from lightning_cnn.errors import UserError
from lightning_cnn.module import ImageClassifier
from lightning_cnn.runs.record import read_record, record_dirs


class EnsembleCLI(CNNLightningCLI):
    """The experiment's config (model, data) and the members."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--checkpoints", type=list[str], default=[], help="checkpoint files or run folders")
        parser.add_argument("--runs", type=str | None, default=None, help="an experiment folder: all its runs")

    def instantiate_trainer(self, **kwargs: object) -> None:
        return None  # the members are evaluated directly, batch by batch


def run_checkpoint(run_dir: Path) -> Path:
    """A run folder's best checkpoint (its last when it kept no best)."""
    checkpoints = (read_record(run_dir) or {}).get("checkpoints") or {}
    name = checkpoints.get("best") or checkpoints.get("last")
    if name is None or not (run_dir / name).is_file():
        raise UserError(f"{run_dir} has no checkpoint in its run record (summary.json); pass a .ckpt file instead")
    return run_dir / name


def member_paths(checkpoints: list[str], runs: str | None) -> list[Path]:
    paths = [Path(item) for item in checkpoints]
    if runs is not None:
        folder = Path(runs)
        if not folder.is_dir():
            raise UserError(f"--runs {runs} is not a folder; pass an experiment folder such as lightning_logs/<name>")
        paths += sorted(record_dirs(folder))
    members = [run_checkpoint(path) if path.is_dir() else path for path in paths]
    if len(members) < 2:
        raise UserError(f"an ensemble needs at least 2 members, got {len(members)}; pass --checkpoints a b or --runs")
    return members


@torch.no_grad()
def evaluate(members: list[ImageClassifier], batches: list[tuple[Tensor, Tensor]]) -> tuple[list[float], float]:
    """Each member's test accuracy and the accuracy of their averaged softmax outputs."""
    correct, ensemble_correct, total = torch.zeros(len(members)), 0, 0
    for images, labels in batches:
        probabilities = torch.stack([member(images).softmax(dim=1) for member in members])
        correct += (probabilities.argmax(dim=2) == labels).sum(dim=1).cpu()
        ensemble_correct += int((probabilities.mean(dim=0).argmax(dim=1) == labels).sum())
        total += labels.numel()
    return (correct / total).tolist(), ensemble_correct / total


def main(args: list[str]) -> None:
    warnings.filterwarnings("ignore", "LightningCLI's args parameter", UserWarning)
    cli = config_tool(
        EnsembleCLI,
        "python -m lightning_cnn ensemble",
        "Average the softmax outputs of several checkpoints of a config's network on the test set, and report each "
        "member's accuracy and the ensemble's.",
        args,
    )
    paths = member_paths(cli.config.checkpoints, cli.config.runs)
    members = []
    for path in paths:
        checkpoint = validate_checkpoint(path, cli.model)  # one clear line for a file of another network
        member = copy.deepcopy(cli.model)
        member.load_state_dict(checkpoint["state_dict"])
        members.append(member.eval())
    data = cli.datamodule
    data.prepare_data()
    data.setup("test")
    batches = list(data.test_dataloader())
    accuracies, ensemble = evaluate(members, batches)
    width = max(len(str(path)) for path in paths)
    for path, accuracy in zip(paths, accuracies, strict=True):
        print(f"{str(path):<{width}}  test acc {100 * accuracy:.2f}%")
    print(f"{'ensemble of ' + str(len(members)):<{width}}  test acc {100 * ensemble:.2f}%")
    logger = cli.config_init["trainer"].get("logger")
    if isinstance(logger, TensorBoardLogger):
        board = TensorBoardLogger(logger.save_dir, name=logger.name, version="ensemble", default_hp_metric=False)
        metrics = {f"ensemble/member_{index}_acc": value for index, value in enumerate(accuracies)}
        board.log_metrics({**metrics, "ensemble/acc": ensemble}, step=0)
        board.finalize("success")
