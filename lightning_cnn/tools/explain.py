"""``python -m lightning_cnn explain --config X``: the layer arithmetic of a config's network, without training.

One row per layer: output shape, the size formula filled in, parameters with their formula,
receptive field and jump, FLOPs and activation memory, for one image of the data's shape. ``--json``
prints the rows as JSON records instead.
"""

from __future__ import annotations

import sys
import warnings

from lightning.pytorch.cli import LightningArgumentParser

from lightning_cnn.analysis import explain_json, explain_markdown, trace_network
from lightning_cnn.cli import CNNLightningCLI, config_tool


class ExplainCLI(CNNLightningCLI):
    """The experiment's config (model, data), read as ``fit`` reads it, and the output format."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--json", action="store_true", help="print JSON records instead of the table")

    def instantiate_trainer(self, **kwargs: object) -> None:
        return None  # the network alone is traced (and a GPU preset must not demand a GPU here)


def main(args: list[str]) -> None:
    # The CLI hands this tool its own arguments; LightningCLI would warn that sys.argv differs from them.
    warnings.filterwarnings("ignore", "LightningCLI's args parameter", UserWarning)
    cli = config_tool(
        ExplainCLI,
        "python -m lightning_cnn explain",
        "The layer arithmetic of a config's network: output sizes with their formula, parameters, receptive field "
        "and jump, FLOPs and activation memory, for one image of the data's shape.",
        args,
    )
    trace = trace_network(cli.model.backbone, tuple(cli.model.hparams.input_shape))
    sys.stdout.write(explain_json(trace) if cli.config.json else explain_markdown(trace))
