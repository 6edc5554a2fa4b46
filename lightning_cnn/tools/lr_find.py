"""``python -m lightning_cnn lr_find --config X``: Lightning's learning-rate finder on a config's model and data.

It trains ``--num_training`` steps with the learning rate rising from ``--min_lr`` to ``--max_lr``,
prints the suggested rate (the steepest fall of the loss), writes the loss-vs-rate plot as PNG (and
to TensorBoard, as run ``<experiment>/lr_find``, when the config logs there) and, with
``--write_config``, the config with the suggestion filled in: the one-cycle ``max_lr`` when the
config uses OneCycleLR, otherwise the optimizer's ``lr``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import yaml
from jsonargparse.typing import PositiveFloat, PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner

from lightning_cnn.cli import CNNLightningCLI, config_tool
from lightning_cnn.errors import UserError

TOOL_KEYS = ("config", "min_lr", "max_lr", "num_training", "output", "write_config")


class LRFindCLI(CNNLightningCLI):
    """The experiment's config, read as ``fit`` reads it, and the finder's range."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--min_lr", type=PositiveFloat, default=1e-6, help="the lowest rate tried")
        parser.add_argument("--max_lr", type=PositiveFloat, default=1.0, help="the highest rate tried")
        parser.add_argument("--num_training", type=PositiveInt, default=100, help="training steps, one rate each")
        parser.add_argument("--output", type=str, default="lr_find.png", help="where the loss-vs-rate plot goes")
        parser.add_argument("--write_config", type=str | None, default=None, help="write the config with the rate")

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        # The finder's steps are not a run: no logger, checkpoints or dashboards (the trainer's device,
        # precision and clipping settings stay).
        settings = {
            key: value for key, value in self.config_init["trainer"].items() if key not in ("callbacks", "logger")
        }
        settings |= {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
        # Room for the finder's steps however short an epoch is (it stops at its own count); a one-cycle
        # schedule needs a finite length to be built before the finder replaces it.
        settings |= {"max_epochs": self.config.num_training, "max_steps": -1}
        return Trainer(**(settings | {"enable_model_summary": False}))


def uses_one_cycle(config: dict) -> bool:
    scheduler = (config.get("model") or {}).get("scheduler") or {}
    return str(scheduler.get("class_path", "")).endswith("OneCycleLR")


def write_config(cli: LRFindCLI, suggestion: float, path: Path) -> str:
    """The parsed config as a file ``fit --config`` reads, with the suggestion in place; returns the key set."""
    config = yaml.safe_load(cli.parser.dump(cli.config, skip_check=True))
    for key in TOOL_KEYS:
        config.pop(key, None)
    model = config.setdefault("model", {})
    if uses_one_cycle(config):
        model["scheduler"].setdefault("init_args", {})["max_lr"] = suggestion
        key = "model.scheduler.init_args.max_lr"
    else:
        model.setdefault("optimizer", {}).setdefault("init_args", {})["lr"] = suggestion
        key = "model.optimizer.init_args.lr"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    except OSError as error:
        raise UserError(f"cannot write --write_config {path} ({error.strerror}); pass a writable path") from None
    return key


def main(args: list[str]) -> None:
    warnings.filterwarnings("ignore", "LightningCLI's args parameter", UserWarning)
    cli = config_tool(
        LRFindCLI,
        "python -m lightning_cnn lr_find",
        "Lightning's learning-rate finder on a config's model and data: the suggested rate, the loss-vs-rate plot, "
        "and with --write_config the config with the rate filled in.",
        args,
    )
    options = cli.config
    if not options.min_lr < options.max_lr:
        raise UserError(f"--min_lr {options.min_lr} is not below --max_lr {options.max_lr}; give a rising range")
    cli.model.check_backbone()
    cli.datamodule.check_inputs("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the finder's short run warns about its own logging interval
        finder = Tuner(cli.trainer).lr_find(
            cli.model,
            datamodule=cli.datamodule,
            min_lr=options.min_lr,
            max_lr=options.max_lr,
            num_training=options.num_training,
            update_attr=False,
        )
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise UserError(
            "the finder could not suggest a rate (the loss did not fall, or it stopped early); widen --min_lr/--max_lr "
            "or raise --num_training"
        )
    figure = finder.plot(suggest=True)
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100, bbox_inches="tight")
    logger = cli.config_init["trainer"].get("logger")
    if isinstance(logger, TensorBoardLogger):
        board = TensorBoardLogger(logger.save_dir, name=logger.name, version="lr_find", default_hp_metric=False)
        board.experiment.add_figure("lr_find/loss_vs_lr", figure, 0)
        board.experiment.flush()
    print(f"suggested learning rate: {suggestion:.3g} (plot: {output})")
    if options.write_config:
        key = write_config(cli, float(suggestion), Path(options.write_config))
        print(f"wrote {options.write_config} with {key}={suggestion:.3g}", file=sys.stderr)
