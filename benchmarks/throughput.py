"""Training and validation throughput of the seed-000 two-conv net, trained five ways in one run.

(1) a plain PyTorch loop over preloaded normalized tensors (the bound); (2) the seeds' loop:
torchvision MNIST + ToTensor/Normalize + DataLoader; (3) a typical LightningModule that logs
torchmetrics accuracy every step on the progress bar, over that DataLoader; (4) the real
``python -m lightning_cnn fit`` in a subprocess with its default logging, metrics and progress bar;
(5) bare Lightning: (4)'s ImageClassifier and tensor batches in a Trainer with nothing else, so that
the gap from (4) to (1) splits into Lightning's own share, (5) vs (1), and this product's, (4) vs (5).
All train TwoConvNet with batch 64 and SGD (lr 0.01, momentum 0.5) on the same number of samples;
the table gives the median samples/s over the repeats and the ratios, which are the signal on a
shared machine. ``--network linear`` trains a single linear layer instead, whose compute is
negligible, so that the milliseconds per step are each way's own overhead.
Usage: ``python -m benchmarks.throughput --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from lightning.pytorch.profilers import SimpleProfiler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchmetrics.classification import MulticlassAccuracy
from torchvision import transforms
from torchvision.datasets import MNIST

from benchmarks.timing import LinearNet, ModelOptions, ThroughputTimer, synchronize
from lightning_cnn.data import MNISTDataModule
from lightning_cnn.errors import UserError
from lightning_cnn.models import TwoConvNet
from lightning_cnn.module import ImageClassifier

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = 0.1307, 0.3081
LEARNING_RATE, MOMENTUM = 0.01, 0.5
WAYS = {
    1: "(1) plain PyTorch loop, preloaded tensors",
    2: "(2) seeds' loop: torchvision + DataLoader",
    3: "(3) typical LightningModule, DataLoader",
    4: "(4) lightning_cnn fit (defaults)",
    5: "(5) bare Lightning: ImageClassifier, tensor batches",
}
TARGETS = ((1, 0.9), (5, 0.97), (2, 2.0), (3, 8.0))  # (4) must reach this multiple of way (i)
RSS_TARGET_BYTES = 1.2e9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=12_800, help="training samples timed per run (default 12800)")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps before timing starts (default 10)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each way; the table shows the median (default 3)"
    )
    parser.add_argument("--ways", default="1,2,3,4,5", help="which ways to run, e.g. 1,4,5 (default all)")
    parser.add_argument(
        "--fit-args",
        default="",
        help="extra command-line options for way (4), e.g. '--trainer.enable_progress_bar false'",
    )
    parser.add_argument(
        "--network",
        choices=("two_conv", "linear"),
        default="two_conv",
        help="two_conv: the seed-000 net (default); linear: one linear layer, to measure per-step overhead",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batch-size", type=int, default=1000, help="validation batch size (default 1000)")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="holds MNIST/raw (default data/)")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed", "16-mixed"), default="32-true")
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights in every way")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network in every way")
    parser.add_argument(
        "--compile-mode",
        choices=("default", "reduce-overhead", "max-autotune"),
        default="default",
        help="torch.compile's mode with --compile (reduce-overhead: CUDA graphs)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch in every way (default: torch's choice)")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="run ways (4) and (5) under Lightning's SimpleProfiler and write its reports here (way4_1.txt, ...)",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    args.ways = sorted({int(way) for way in args.ways.split(",")})
    if not set(args.ways) <= set(WAYS) or min(args.samples, args.repeats, args.batch_size, args.eval_batch_size) < 1:
        parser.error("--ways takes numbers from 1 to 5; --samples, --repeats and batch sizes must be positive")
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu needs a CUDA device, and none is visible; run on the CPU without it")
    args.steps = math.ceil(args.samples / args.batch_size)
    args.device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    args.data_dir = args.data_dir.resolve()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


# --- shared pieces ---------------------------------------------------------------------------------


NETWORKS = {"two_conv": TwoConvNet, "linear": LinearNet}


def make_network(args: argparse.Namespace) -> nn.Module:
    network = NETWORKS[args.network]().to(args.device)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last)
    if args.compile:
        network.compile(mode=args.compile_mode)  # in place, as ModelOptions does in the Lightning ways
    return network


def autocast(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    if args.precision not in dtypes:
        return contextlib.nullcontext()
    return torch.autocast(args.device.type, dtype=dtypes[args.precision])


def train_steps(args: argparse.Namespace, network: nn.Module, batches: Iterator[tuple[Tensor, Tensor]]) -> dict:
    """The training loop of ways (1) and (2): warm-up steps, then ``args.steps`` timed steps."""
    optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    scaler = torch.amp.GradScaler(args.device.type, enabled=args.precision == "16-mixed")
    network.train()
    samples, start, cpu_start = 0, None, None
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            synchronize(args.device)
            start, cpu_start = time.perf_counter(), time.process_time()
        images, labels = next(batches)
        images, labels = images.to(args.device), labels.to(args.device)
        if args.compile and args.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # as ModelOptions does in the Lightning ways
        optimizer.zero_grad()
        with autocast(args):
            loss = F.cross_entropy(network(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        samples += len(labels) if step >= args.warmup_steps else 0
    synchronize(args.device)
    return {
        "train_samples": samples,
        "train_seconds": time.perf_counter() - start,
        "train_cpu_seconds": time.process_time() - cpu_start,
    }


def torchvision_split(args: argparse.Namespace) -> tuple[Subset, Subset]:
    """The seeds' dataset (per-sample ToTensor + Normalize), split as the DataModule splits it."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    dataset = MNIST(args.data_dir, train=True, transform=transform)
    train_index, val_index = MNISTDataModule().split_indices(len(dataset))
    return Subset(dataset, train_index.tolist()), Subset(dataset, val_index.tolist())


def endless(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


# --- the four ways -----------------------------------------------------------------------------------


def plain_loop(args: argparse.Namespace, repeat: int) -> dict:
    """(1) Preloaded, normalized tensors on the device, shuffled by a permutation, gathered by index."""
    torch.manual_seed(repeat)
    dataset = MNIST(args.data_dir, train=True)
    train_index, val_index = MNISTDataModule().split_indices(len(dataset))
    images = ((dataset.data.unsqueeze(1).float() / 255 - MEAN) / STD).to(args.device)
    labels = dataset.targets.to(args.device)
    train_images, train_labels = images[train_index], labels[train_index]
    val_images, val_labels = images[val_index], labels[val_index]

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            for index in torch.randperm(len(train_labels), device=args.device).split(args.batch_size):
                yield train_images.index_select(0, index), train_labels.index_select(0, index)

    network = make_network(args)
    result = train_steps(args, network, batches())
    network.eval()
    with torch.no_grad(), autocast(args):
        network(val_images[: args.eval_batch_size])  # untimed, as Lightning's sanity check (and compile) is
    synchronize(args.device)
    start = time.perf_counter()
    correct = torch.zeros((), dtype=torch.long, device=args.device)
    with torch.no_grad(), autocast(args):
        for batch_images, batch_labels in zip(
            val_images.split(args.eval_batch_size), val_labels.split(args.eval_batch_size), strict=True
        ):
            correct += (network(batch_images).argmax(dim=1) == batch_labels).sum()
    correct.item()  # one sync, as for any epoch-end metric
    return {**result, "val_samples": len(val_labels), "val_seconds": time.perf_counter() - start}


def seeds_loop(args: argparse.Namespace, repeat: int) -> dict:
    """(2) The tutorials' loop: per-sample PIL -> ToTensor -> Normalize in a DataLoader (no workers)."""
    torch.manual_seed(repeat)
    train_set, val_set = torchvision_split(args)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    network = make_network(args)
    result = train_steps(args, network, endless(loader))
    network.eval()
    val_loader = DataLoader(val_set, batch_size=args.eval_batch_size)
    with torch.no_grad(), autocast(args):
        network(next(iter(val_loader))[0].to(args.device))  # untimed, as Lightning's sanity check (and compile) is
    synchronize(args.device)
    start = time.perf_counter()
    correct = 0
    with torch.no_grad(), autocast(args):
        for images, labels in val_loader:
            images, labels = images.to(args.device), labels.to(args.device)
            correct += (network(images).argmax(dim=1) == labels).sum().item()
    synchronize(args.device)
    return {**result, "val_samples": len(val_set), "val_seconds": time.perf_counter() - start}


class TypicalClassifier(pl.LightningModule):
    """How Lightning MNIST examples are usually written: loss and accuracy logged every step, on the bar."""

    def __init__(self, network: type[nn.Module] = TwoConvNet) -> None:
        super().__init__()
        self.backbone = network()
        self.train_acc = MulticlassAccuracy(num_classes=10)
        self.val_acc = MulticlassAccuracy(num_classes=10)

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.train_acc(logits, labels)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc(logits, labels)
        self.log("val_loss", F.cross_entropy(logits, labels), prog_bar=True)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def typical_lightning(args: argparse.Namespace, repeat: int) -> dict:
    """(3) Trainer defaults (TensorBoard logger, progress bar, checkpointing) over the seeds' DataLoader."""
    pl.seed_everything(repeat, verbose=False)
    train_set, val_set = torchvision_split(args)
    with tempfile.TemporaryDirectory() as tmp:
        timer = ThroughputTimer(str(Path(tmp) / "timing.json"), args.warmup_steps)
        # The bar and Lightning's notices go to a file, as they would to a terminal, not into the table.
        with (
            open(Path(tmp) / "output.txt", "w") as output,
            contextlib.redirect_stdout(output),
            contextlib.redirect_stderr(output),
        ):
            trainer = pl.Trainer(
                accelerator=args.accelerator,
                devices=1,
                precision=args.precision,
                max_epochs=1,
                limit_train_batches=args.warmup_steps + args.steps,
                default_root_dir=tmp,
                callbacks=[timer, ModelOptions(args.channels_last, args.compile, args.compile_mode)],
            )
            trainer.fit(
                TypicalClassifier(NETWORKS[args.network]),
                DataLoader(train_set, batch_size=args.batch_size, shuffle=True),
                DataLoader(val_set, batch_size=args.eval_batch_size),
            )
        return timer.result()


def lightning_cnn_fit(args: argparse.Namespace, repeat: int) -> dict:
    """(4) ``python -m lightning_cnn fit`` on the seed-000 config; timed from inside by a callback."""
    with tempfile.TemporaryDirectory() as tmp:
        timing = Path(tmp) / "timing.json"
        callbacks = [
            {
                "class_path": "benchmarks.timing.ThroughputTimer",
                "init_args": {"output": str(timing), "warmup_steps": args.warmup_steps},
            }
        ]
        if args.channels_last or args.compile:
            options = {"channels_last": args.channels_last, "compile": args.compile, "compile_mode": args.compile_mode}
            callbacks.append({"class_path": "benchmarks.timing.ModelOptions", "init_args": options})
        preset = "gpu" if args.accelerator == "gpu" else "cpu"
        command = [
            sys.executable, "-m", "lightning_cnn", "fit",
            "--config", str(REPO / "configs" / "seed000_two_conv.yaml"),
            "--config", str(REPO / "configs" / "trainer" / f"{preset}.yaml"),
            "--seed_everything", str(repeat),
            "--data.data_dir", str(args.data_dir),
            "--data.batch_size", str(args.batch_size),
            # The validation split of ways (1) to (3): the config itself trains on all images, unvalidated.
            "--data.val_split", str(MNISTDataModule().val_split),
            "--data.eval_batch_size", str(args.eval_batch_size),
            "--model.backbone", f"{NETWORKS[args.network].__module__}.{NETWORKS[args.network].__name__}",
            "--trainer.precision", args.precision,
            "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", str(args.warmup_steps + args.steps),
            "--trainer.logger.init_args.save_dir", str(Path(tmp) / "lightning_logs"),
            *(f"--trainer.callbacks+={json.dumps(callback)}" for callback in callbacks),
            *shlex.split(args.fit_args),
        ]  # fmt: skip
        if args.profile_dir is not None:
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            command += [
                "--trainer.profiler", "lightning.pytorch.profilers.SimpleProfiler",
                "--trainer.profiler.dirpath", str(args.profile_dir.resolve()),
                "--trainer.profiler.filename", f"way4_{repeat + 1}",
            ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)  # torch's intra-op thread count in the child
        with open(Path(tmp) / "output.txt", "w+") as output:
            launched = time.time()
            process = subprocess.Popen(command, cwd=tmp, env=env, stdout=output, stderr=output)
            process.wait()
            if process.returncode != 0 or not timing.is_file():
                output.seek(0)
                tail = output.read()[-3000:]
                raise RuntimeError(f"lightning_cnn fit failed (exit {process.returncode}):\n{tail}")
        result = json.loads(timing.read_text())
    return {**result, "startup_seconds": result["first_step_wall"] - launched}


def profiler(args: argparse.Namespace, way: int, repeat: int) -> SimpleProfiler | None:
    """Lightning's SimpleProfiler writing ``way<way>_<repeat>.txt`` under ``--profile-dir``, if one was given."""
    if args.profile_dir is None:
        return None
    args.profile_dir.mkdir(parents=True, exist_ok=True)
    return SimpleProfiler(dirpath=args.profile_dir, filename=f"way{way}_{repeat + 1}")


def bare_lightning(
    args: argparse.Namespace,
    repeat: int,
    module: type[ImageClassifier] = ImageClassifier,
    extra_callbacks: list[pl.Callback] | None = None,
) -> dict:
    """(5) The engine's floor: (4)'s ImageClassifier and tensor batches in a Trainer with nothing else.

    No logger, checkpoints, progress bar, model summary or callbacks besides the timer: what is left
    over (1) is Lightning's own loop; what (4) spends over this is the product's.
    """
    pl.seed_everything(repeat, verbose=False)
    data = MNISTDataModule(
        data_dir=str(args.data_dir),
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        val_split=MNISTDataModule().val_split,
    )
    model = module(
        NETWORKS[args.network](),
        optimizer=functools.partial(torch.optim.SGD, lr=LEARNING_RATE, momentum=MOMENTUM),
    )
    with tempfile.TemporaryDirectory() as tmp:
        timer = ThroughputTimer(str(Path(tmp) / "timing.json"), args.warmup_steps)
        with (
            open(Path(tmp) / "output.txt", "w") as output,
            contextlib.redirect_stdout(output),
            contextlib.redirect_stderr(output),
        ):
            trainer = pl.Trainer(
                accelerator=args.accelerator,
                devices=1,
                precision=args.precision,
                max_epochs=1,
                limit_train_batches=args.warmup_steps + args.steps,
                default_root_dir=tmp,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                profiler=profiler(args, 5, repeat),
                callbacks=[
                    timer,
                    ModelOptions(args.channels_last, args.compile, args.compile_mode),
                    *(extra_callbacks or []),
                ],
            )
            trainer.fit(model, datamodule=data)
        return timer.result()


RUNNERS: dict[int, Callable[[argparse.Namespace, int], dict]] = {
    1: plain_loop,
    2: seeds_loop,
    3: typical_lightning,
    4: lightning_cnn_fit,
    5: bare_lightning,
}


# --- report --------------------------------------------------------------------------------------------


def median_rate(runs: list[dict], split: str, clock: str = "") -> float:
    return statistics.median(run[f"{split}_samples"] / run[f"{split}_{clock}seconds"] for run in runs)


def report(args: argparse.Namespace, runs: dict[int, list[dict]]) -> str:
    train = {way: median_rate(results, "train") for way, results in runs.items()}
    train_cpu = {way: median_rate(results, "train", "cpu_") for way, results in runs.items()}
    val = {way: median_rate(results, "val") for way, results in runs.items()}
    device = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "CPU"
    threads = f"{torch.get_num_threads()} torch threads"
    options = [args.precision] + ["channels_last"] * args.channels_last
    options += [f"compile ({args.compile_mode})"] * args.compile
    lines = [
        f"{NETWORKS[args.network].__name__}, batch {args.batch_size}, SGD lr {LEARNING_RATE} momentum {MOMENTUM}; "
        f"{device}, {threads}; {', '.join(options)}",
        f"{args.steps * args.batch_size} training samples after {args.warmup_steps} warm-up steps; "
        f"validation on 5000 images, batch {args.eval_batch_size}; median of {args.repeats}",
        "",
        "| way | train samples/s | ms per step | vs (1) | (4) / way | samples per CPU-s | (4) / way | val samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for way in runs:
        cells = [WAYS[way], f"{train[way]:,.0f}", f"{1000 * args.batch_size / train[way]:.2f}"]
        cells.append(f"{train[way] / train[1]:.2f}x" if 1 in train else "-")
        cells.append(f"{train[4] / train[way]:.2f}x" if 4 in train else "-")
        cells.append(f"{train_cpu[way]:,.0f}")
        cells.append(f"{train_cpu[4] / train_cpu[way]:.2f}x" if 4 in train else "-")
        cells.append(f"{val[way]:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if {1, 5} <= set(train):
        step = {way: 1000 * args.batch_size / rate for way, rate in train.items()}
        lines += ["", f"gap to the plain loop: Lightning's own share, (5) vs (1): {train[5] / train[1]:.3f}x "
                  f"({step[5] - step[1]:+.2f} ms per step)"]  # fmt: skip
        if 4 in train:
            lines.append(
                f"this product's share, (4) vs (5): {train[4] / train[5]:.3f}x ({step[4] - step[5]:+.2f} ms per step)"
            )
    lines += ["", "samples per CPU-s: training samples over the process's CPU time (all its threads), which"]
    lines += ["other processes on a shared machine disturb less than wall-clock time; targets use wall-clock time."]
    if 4 in runs:
        startup = statistics.median(run["startup_seconds"] for run in runs[4])
        rss = max(run["peak_rss_bytes"] for run in runs[4])
        lines += [
            "",
            f"(4) process start to first training step: {startup:.2f} s (median); peak RSS: {rss / 1e6:,.0f} MB (max)",
        ]
        if args.network != "two_conv":
            lines += ["", "(the targets are for the two-conv net; run without --network to check them)"]
            return "\n".join(lines)
        lines += ["", "targets:"]
        for way, target in TARGETS:
            if way in train:
                ratio = train[4] / train[way]
                lines.append(f"  (4) >= {target:g}x ({way}): {ratio:.2f}x  {'met' if ratio >= target else 'NOT met'}")
        met = "met" if rss <= RSS_TARGET_BYTES else "NOT met"
        lines.append(f"  peak RSS of (4) <= {RSS_TARGET_BYTES / 1e9:g} GB: {rss / 1e9:.2f} GB  {met}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        MNISTDataModule(data_dir=args.data_dir).prepare_data()  # download (or say how to get the files)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    runs: dict[int, list[dict]] = {way: [] for way in args.ways}
    # Repeats are interleaved so that load from other processes falls on every way alike.
    for repeat in range(args.repeats):
        for way in args.ways:
            result = RUNNERS[way](args, repeat)
            runs[way].append(result)
            rate = result["train_samples"] / result["train_seconds"]
            print(f"repeat {repeat + 1}/{args.repeats} {WAYS[way]}: {rate:,.0f} samples/s", file=sys.stderr, flush=True)
    print(report(args, runs))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
