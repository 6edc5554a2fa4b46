"""The trace as a Markdown table (``explain``, ``explain.md`` in a run folder) or as JSON records (``--json``).

The table is plain text padded to its widest cell, so it reads the same in a terminal, piped to a
file, or rendered as Markdown; it is never wrapped to the width of a terminal.
"""

from __future__ import annotations

import json

from lightning_cnn.analysis.arithmetic import byte_text, count_text, pair_text, shape_text
from lightning_cnn.analysis.trace import Trace

COLUMNS = (
    "layer",
    "type",
    "output shape",
    "output size",
    "parameters",
    "receptive field",
    "jump",
    "FLOPs",
    "activation memory",
)
RIGHT_ALIGNED = {"parameters", "receptive field", "jump", "FLOPs", "activation memory"}


def _cells(trace: Trace) -> list[list[str]]:
    rows = []
    for row in trace.rows:
        parameters = row.parameter_formula or (f"{row.parameters:,}" if row.parameters else "0")
        rows.append(
            [
                row.layer,
                row.type,
                shape_text(row.output_shape),
                row.size_formula,
                parameters,
                pair_text(row.field.receptive_field if row.field else None),
                pair_text(row.field.jump if row.field else None),
                count_text(row.flops),
                byte_text(row.activation_bytes),
            ]
        )
    rows.append(
        ["total", "", "", "", f"{trace.total_parameters:,}", "", "", count_text(trace.total_flops),
         byte_text(trace.total_activation_bytes)]
    )  # fmt: skip
    return rows


def explain_markdown(trace: Trace) -> str:
    """A heading line, the feature-map sizes, and one table row per layer, closed by the totals."""
    rows = _cells(trace)
    widths = [max(len(column), *(len(row[index]) for row in rows)) for index, column in enumerate(COLUMNS)]

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if column in RIGHT_ALIGNED else cell.ljust(width)
            for cell, width, column in zip(cells, widths, COLUMNS, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (width + 1) + ":" if column in RIGHT_ALIGNED else "-" * (width + 2)
        for width, column in zip(widths, COLUMNS, strict=True)
    ) + "|"  # fmt: skip
    heading = (
        f"{trace.network} on one {shape_text(trace.input_shape)} image: {trace.total_parameters:,} parameters, "
        f"{count_text(trace.total_flops)} FLOPs"
    )
    notes = (
        "Output size per axis: (n − k + 2·p)/s + 1 (⌊⌋ where it does not divide). Receptive field and jump, in "
        "input pixels: r' = r + (k − 1)·j, j' = j·s, from r = j = 1. FLOPs per image, a multiply-add counted as 2; "
        "activation memory: one image's output of the layer."
    )
    lines = [f"# {heading}", "", f"Feature maps: {trace.spatial_sizes()}", "", notes, "", line(list(COLUMNS)), rule]
    lines += [line(row) for row in rows]
    return "\n".join(lines) + "\n"


def explain_json(trace: Trace) -> str:
    """A JSON list of one record per layer, a record a line (see :meth:`.LayerRow.record`)."""
    records = [json.dumps(row.record(), ensure_ascii=False) for row in trace.rows]
    return "[\n" + ",\n".join(records) + "\n]\n"
