"""The model summary at the start of fit: every layer of the network, as wide as it needs, without the metric objects.

Lightning's rich summary lists the torchmetrics objects beside the layers and, when the output is
a file or a pipe (``fit ... | tee log``), wraps its table into 80 columns; this one does neither.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import ModelSummary, get_human_readable_count
from torchmetrics import Metric


def _is_metric(module: object) -> bool:
    """A torchmetrics object, or a container holding only such objects (the module's per-split metrics)."""
    if isinstance(module, Metric):
        return True
    children = list(module.children()) if hasattr(module, "children") else []
    return bool(children) and all(_is_metric(child) for child in children)


class NetworkSummary(RichModelSummary):
    """Every layer with its output shape, parameter count and FLOPs, printed by rank zero at the start of fit.

    Args:
        max_depth: how deep nested layers are listed (-1: all).
    """

    def __init__(self, max_depth: int = -1) -> None:
        super().__init__(max_depth=max_depth)
        self.depth = max_depth

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.depth or not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.table import Table

        summary = ModelSummary(pl_module, max_depth=self.depth)
        flops = summary.flop_counts
        table = Table(header_style="bold magenta")
        for column, justify in (("Name", "left"), ("Type", "left"), ("Params", "right"), ("Mode", "left"),
                                ("FLOPs", "right"), ("In sizes", "right"), ("Out sizes", "right")):  # fmt: skip
            table.add_column(column, justify=justify, no_wrap=True)
        rows = zip(
            summary.layer_names, summary.layer_types, summary.param_nums, summary.training_modes,
            summary.in_sizes, summary.out_sizes, strict=True,
        )  # fmt: skip
        for name, layer_type, parameters, training, in_size, out_size in rows:
            if _is_metric(pl_module.get_submodule(name)):
                continue
            layer_flops = sum(flops.get(name, {}).values())
            table.add_row(
                name, layer_type, get_human_readable_count(parameters), "train" if training else "eval",
                get_human_readable_count(layer_flops), str(in_size), str(out_size),
            )  # fmt: skip
        trainable, total = summary.trainable_parameters, summary.total_parameters
        # A terminal keeps its own width; a file or pipe gets the table's own width instead of rich's 80 columns.
        console = Console(soft_wrap=True)
        if not console.is_terminal:
            console = Console(width=1000, soft_wrap=True)
        console.print(table, crop=False)
        console.print(
            f"Trainable params: {get_human_readable_count(trainable)}   Non-trainable params: "
            f"{get_human_readable_count(total - trainable)}   Total params: {get_human_readable_count(total)}   "
            f"Total FLOPs: {get_human_readable_count(summary.total_flops)}"
        )
