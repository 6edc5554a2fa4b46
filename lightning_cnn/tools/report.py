"""The ``report`` command: a comparison table and curve plots of the runs under a log root.

Reads each run's record (``summary.json``, see :mod:`lightning_cnn.runs.record`) and writes
``runs.md``, ``runs.csv``, ``overlay.png`` and one ``curves/<run>.png`` per run.
:func:`lightning_cnn.runs.summary.collect_runs` is the Python entry point for other tables built from
the same numbers.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from lightning_cnn.errors import UserError
from lightning_cnn.runs.summary import DEFAULT_LOG_ROOT, RunSummary, collect_runs, unrecorded_runs
from lightning_cnn.runs.tags import CLASS_VISUALIZATION_FILENAME, CURVE_TAGS

CURVE_TITLES = {
    "train/loss": "training loss",
    "val/loss": "validation loss",
    "train/acc": "training accuracy",
    "val/acc": "validation accuracy",
}
CSV_COLUMNS = (
    "run",
    "architecture",
    "parameters",
    "optimizer",
    "learning_rate",
    "scheduler",
    "batch_size",
    "max_epochs",
    "augmentation",
    "recipe",
    "best_val_acc",
    "test_acc",
    "epochs",
    "train_seconds",
)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m {rest:04.1f}s" if minutes else f"{rest:.1f}s"


def markdown_table(runs: list[RunSummary]) -> str:
    """The comparison table in Markdown: accuracies in percent, parameters with thousands separators."""
    lines = [
        "| run | architecture | parameters | recipe | best val acc | test acc | epochs | training time |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        parameters = "n/a" if run.parameters is None else f"{run.parameters:,}"
        cells = (
            f"`{run.run}`",
            run.architecture or "n/a",
            parameters,
            run.recipe,
            percent(run.best_val_acc),
            percent(run.test_acc),
            str(run.epochs),
            duration(run.train_seconds),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(runs: list[RunSummary]) -> str:
    """The comparison table in CSV with the exact logged values (accuracies as fractions, seconds)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        row = [getattr(run, column) for column in CSV_COLUMNS]
        writer.writerow(["" if value is None else repr(value) if isinstance(value, float) else value for value in row])
    return buffer.getvalue()


def _slug(run: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run).strip("_") or "run"


def _png(figure) -> bytes:  # noqa: ANN001 (a matplotlib Figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def run_figure(run: RunSummary):  # noqa: ANN201
    """Loss and accuracy per epoch of one run, training and validation."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, metric, label in ((loss_axes, "loss", "loss"), (accuracy_axes, "acc", "accuracy")):
        for split, style in (("train", "--"), ("val", "-")):
            points = run.curves.get(f"{split}/{metric}", [])
            if points:
                epochs, values = zip(*points, strict=True)
                axes.plot(epochs, values, style, marker="o", markersize=3, label=split)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend()
    figure.suptitle(f"{run.run} ({run.architecture or 'unknown architecture'})")
    return figure


def overlay_figure(runs: list[RunSummary]):  # noqa: ANN201
    """Every run's curves on shared axes: training and validation loss and accuracy per epoch."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(12, 8), layout="constrained")
    grid = figure.subplots(2, 2)
    for axes, tag in zip(grid.flat, CURVE_TAGS, strict=True):
        for run in runs:
            points = run.curves.get(tag, [])
            if points:
                epochs, values = zip(*points, strict=True)
                axes.plot(epochs, values, marker="o", markersize=3, label=run.run)
        axes.set_title(CURVE_TITLES[tag])
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    for axes in grid.flat[1:]:
        more_handles, more_labels = axes.get_legend_handles_labels()
        for handle, label in zip(more_handles, more_labels, strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    return figure


def write_report(
    log_root: str | Path = DEFAULT_LOG_ROOT, out: str | Path | None = None
) -> tuple[Path, list[RunSummary]]:
    """Write the table (``runs.md``, ``runs.csv``) and plots of the runs under ``log_root`` into ``out``.

    ``out`` defaults to ``<log_root>/report``. Everything is rendered before anything is written, so
    a failure leaves no partial report. Returns the output folder and the runs it shows.
    """
    log_root = Path(log_root)
    out = Path(out) if out is not None else log_root / "report"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the report")
    runs = collect_runs(log_root)
    if not runs:
        raise UserError(
            f"no runs under {log_root} (no run record, summary.json, in any folder); train one with "
            "'python -m lightning_cnn fit --config ...', or pass --log_root <folder of runs>"
        )
    plotted = [run for run in runs if any(run.curves.values())]
    images = {f"curves/{_slug(run.run)}.png": _png(run_figure(run)) for run in plotted}
    if plotted:
        images["overlay.png"] = _png(overlay_figure(plotted))
    markdown = f"# Runs under `{log_root}`\n\n" + markdown_table(runs)
    if plotted:
        markdown += "\n![loss and accuracy of every run](overlay.png)\n\n"
        markdown += "\n".join(f"- [`{run.run}`](curves/{_slug(run.run)}.png)" for run in plotted) + "\n"
    # What each network sees: the class visualization its fit wrote, copied so the report stands alone.
    seen = [run for run in runs if (run.path / CLASS_VISUALIZATION_FILENAME).is_file()]
    for run in seen:
        images[f"class_visualization/{_slug(run.run)}.png"] = (run.path / CLASS_VISUALIZATION_FILENAME).read_bytes()
    if seen:
        markdown += (
            "\n## What each network sees\n\nOne image per class that the network scores highest, in label order.\n\n"
        )
        markdown += "\n".join(
            f"`{run.run}`\n\n![{run.run}](class_visualization/{_slug(run.run)}.png)\n" for run in seen
        )
    files = {"runs.md": markdown.encode(), "runs.csv": csv_table(runs).encode(), **images}
    try:
        for name, content in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(content)
    except OSError as error:
        raise UserError(
            f"cannot write the report into {out} ({error.strerror}); pass a writable --out folder"
        ) from None
    return out, runs


def main(args: list[str] | None = None) -> None:
    """``python -m lightning_cnn report [--log_root lightning_logs] [--out <folder>]``."""
    parser = ArgumentParser(
        prog="python -m lightning_cnn report",
        description="Write a comparison table (runs.md, runs.csv) and loss/accuracy plots (PNG) of the runs "
        "under a log root.",
    )
    parser.add_argument("--log_root", type=str, default=DEFAULT_LOG_ROOT, help="folder of runs (the logger's save_dir)")
    parser.add_argument("--out", type=str | None, default=None, help="output folder (default: <log_root>/report)")
    config = parser.parse_args(args)
    out, runs = write_report(config.log_root, config.out)
    unrecorded = unrecorded_runs(Path(config.log_root))
    if unrecorded:
        print(
            f"note: {len(unrecorded)} folders hold TensorBoard logs but no run record (summary.json) and are not "
            f"shown, such as {unrecorded[0]}; runs trained by this version write one",
            file=sys.stderr,
        )
    print(markdown_table(runs), end="")
    print(f"Report written to {out}/ (runs.md, runs.csv, overlay.png, curves/)")
