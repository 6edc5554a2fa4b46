"""Where (4) ``lightning_cnn fit`` spends its time per training step beyond (5) bare Lightning and (1) the plain loop.

Two measurements in one run, repeats interleaved: (a) an ablation table, the ms per step of (1);
of (5) without its per-step metric sums, without its NaN check, with torchmetrics updated every
step instead, and with 20 callbacks that do nothing (Lightning's per-hook dispatch); and of (4)
with one product feature switched off at a time (progress bar, dashboard callbacks, TensorBoard
logger, checkpoints) and with all of them off; (b) Lightning's SimpleProfiler over (4) and (5):
each hook's microseconds per training step and the difference, so that every per-step cost of the
product is named, not guessed (the profiler adds a few microseconds to every hook it times).
Usage: ``python -m benchmarks.attribution --threads 1`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from benchmarks import throughput
from lightning_cnn.module import ImageClassifier

DASHBOARD_OFF = " ".join(
    f"--insight.{kind} false"
    for kind in (
        "input_grid", "misclassified", "confusion_matrix", "filters", "feature_maps", "graph", "hparams",
        "per_class_accuracy", "class_visualization", "embeddings", "explain",
    )
)  # fmt: skip
NO_OP_CALLBACKS = 20
FEATURES_OFF = {
    "progress bar": "--trainer.enable_progress_bar false",
    "dashboard callbacks": DASHBOARD_OFF,
    "TensorBoard logger": "--trainer.logger false",
    "checkpoints": "--trainer.enable_checkpointing false",
}


class WithoutStepMetrics(ImageClassifier):
    """ImageClassifier whose training steps update no metric (its epoch-end train/acc is then meaningless)."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        return F.cross_entropy(self(images), labels, label_smoothing=self.hparams.label_smoothing)


class WithStepMetricUpdates(ImageClassifier):
    """ImageClassifier updating torchmetrics objects at every training step, instead of its device sums."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.step_accuracy = MulticlassAccuracy(self.hparams.num_classes, average="micro", validate_args=False)
        self.step_loss = MeanMetric(nan_strategy="disable")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        self.step_accuracy.update(logits.detach(), labels)
        self.step_loss.update(loss.detach().expand(labels.numel()))
        bad = ~torch.isfinite(loss.detach()) & (self.first_nonfinite_step < 0)
        self.first_nonfinite_step = torch.where(bad, self.global_step, self.first_nonfinite_step)
        return loss


class WithoutNaNCheck(ImageClassifier):
    """ImageClassifier without the on-device record of the first non-finite loss, nor its periodic check."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._shared_step(batch, "train")
        return loss

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        pass


def variants() -> list[tuple[str, Callable[[argparse.Namespace, int], dict]]]:
    """The rows of the ablation table: a label and a runner each."""

    def fit_with(extra: str) -> Callable[[argparse.Namespace, int], dict]:
        def run(args: argparse.Namespace, repeat: int) -> dict:
            changed = copy.copy(args)
            changed.fit_args = f"{args.fit_args} {extra}".strip()
            return throughput.lightning_cnn_fit(changed, repeat)

        return run

    def bare_with(module: type[ImageClassifier]) -> Callable[[argparse.Namespace, int], dict]:
        return lambda args, repeat: throughput.bare_lightning(args, repeat, module)

    rows = [
        ("(1) plain loop", throughput.plain_loop),
        ("(5) bare Lightning, ImageClassifier", throughput.bare_lightning),
        ("(5) without per-step metric updates", bare_with(WithoutStepMetrics)),
        ("(5) with torchmetrics updates every step", bare_with(WithStepMetricUpdates)),
        ("(5) without the NaN check", bare_with(WithoutNaNCheck)),
        # About as many callbacks as fit has: what Lightning's dispatch of their per-step hooks costs.
        (
            f"(5) with {NO_OP_CALLBACKS} callbacks that do nothing",
            lambda args, repeat: throughput.bare_lightning(
                args, repeat, extra_callbacks=[pl.Callback() for _ in range(NO_OP_CALLBACKS)]
            ),
        ),
        ("(4) lightning_cnn fit (defaults)", fit_with("")),
    ]
    rows += [(f"(4) without the {name}", fit_with(extra)) for name, extra in FEATURES_OFF.items()]
    rows.append(("(4) without all four", fit_with(" ".join(FEATURES_OFF.values()))))
    return rows


# --- SimpleProfiler reports -------------------------------------------------------------------------


def per_step_actions(report: str, steps: int) -> dict[str, float]:
    """Microseconds per training step of each action that runs at least once per training step.

    ``report`` is SimpleProfiler's table; ModelCheckpoint's settings are dropped from its action names.
    """
    actions: dict[str, float] = {}
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("Action", "Total"):
            continue
        name = re.sub(r"\{.*\}", "", cells[0])
        try:
            calls, total = int(cells[2]), float(cells[3])
        except ValueError:
            continue
        if calls >= steps:
            actions[name] = actions.get(name, 0.0) + 1e6 * total / steps
    return actions


def profile_table(reports: dict[int, list[str]], steps: int, top: int = 25) -> list[str]:
    """Median µs per step of each action in (4) and (5), largest difference first."""
    medians: dict[int, dict[str, float]] = {}
    for way, texts in reports.items():
        parsed = [per_step_actions(text, steps) for text in texts]
        names = set().union(*parsed)
        medians[way] = {name: statistics.median(run.get(name, 0.0) for run in parsed) for name in names}
    names = set(medians[4]) | set(medians[5])
    rows = sorted(names, key=lambda name: medians[4].get(name, 0.0) - medians[5].get(name, 0.0), reverse=True)
    lines = ["| action (SimpleProfiler) | (4) µs/step | (5) µs/step | (4) - (5) |", "|---|---:|---:|---:|"]
    for name in rows[:top]:
        four, five = medians[4].get(name, 0.0), medians[5].get(name, 0.0)
        lines.append(f"| `{name}` | {four:,.0f} | {five:,.0f} | {four - five:+,.0f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-profile", action="store_true", help="only the ablation table, no SimpleProfiler runs")
    own, rest = parser.parse_known_args(argv)
    args = throughput.parse_args(rest)
    rows = variants()
    runs: dict[str, list[dict]] = {label: [] for label, _ in rows}
    reports: dict[int, list[str]] = {4: [], 5: []}
    with tempfile.TemporaryDirectory() as tmp:
        profiled = copy.copy(args)
        profiled.profile_dir = Path(tmp)
        for repeat in range(args.repeats):
            for label, run in rows:
                runs[label].append(run(args, repeat))
                rate = runs[label][-1]["train_samples"] / runs[label][-1]["train_seconds"]
                print(f"repeat {repeat + 1}/{args.repeats} {label}: {rate:,.0f} samples/s", file=sys.stderr, flush=True)
            if not own.no_profile:
                for way, run in ((4, throughput.lightning_cnn_fit), (5, throughput.bare_lightning)):
                    run(profiled, repeat)
                    # SimpleProfiler names its report after the stage: fit-way<N>_<repeat>.txt.
                    reports[way].append((Path(tmp) / f"fit-way{way}_{repeat + 1}.txt").read_text())
    ms = {label: 1000 * statistics.median(r["train_seconds"] / r["train_samples"] for r in results) * args.batch_size
          for label, results in runs.items()}  # fmt: skip
    plain, bare = ms["(1) plain loop"], ms["(5) bare Lightning, ImageClassifier"]
    fit = ms["(4) lightning_cnn fit (defaults)"]
    lines = [
        f"{throughput.NETWORKS[args.network].__name__}, batch {args.batch_size}, {args.steps} timed steps, "
        f"median of {args.repeats}, {args.threads or 'default'} torch threads",
        "",
        "| way | ms per step | vs (1) | vs (5) | ms over (5) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, value in ms.items():
        lines.append(f"| {label} | {value:.2f} | {plain / value:.2f}x | {bare / value:.2f}x | {value - bare:+.2f} |")
    lines += [
        "",
        f"Lightning's own share, (5) vs (1): {plain / bare:.3f}x ({bare - plain:+.2f} ms per step)",
        f"this product's share, (4) vs (5): {bare / fit:.3f}x ({fit - bare:+.2f} ms per step)",
        f"targets: (4) >= 0.97x (5): {bare / fit:.2f}x {'met' if bare / fit >= 0.97 else 'NOT met'}; "
        f"(4) >= 0.9x (1): {plain / fit:.2f}x {'met' if plain / fit >= 0.9 else 'NOT met'}",
    ]
    if not own.no_profile:
        lines += ["", *profile_table(reports, args.steps + args.warmup_steps)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
