"""What Lightning's per-step SIGTERM broadcast costs under 2-process gloo DDP on the CPU.

Since 2.5.2 Lightning's training loop broadcasts a one-element "SIGTERM received" tensor from rank 0
before every step when more than one process trains, and reads it back on the host (``.item()``).
No Trainer setting turns it off, so this measures it: the ms per step of the two-conv net
(ImageClassifier, tensor batches, bare Trainer) in 2 gloo processes, and, in the same processes
after training, the same broadcast and read repeated on its own. Usage: ``python -m benchmarks.ddp_sync``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from benchmarks.timing import ThroughputTimer
from lightning_cnn.data import MNISTDataModule
from lightning_cnn.models import TwoConvNet
from lightning_cnn.module import ImageClassifier

REPO = Path(__file__).resolve().parents[1]


class BroadcastTimer(pl.Callback):
    """After training, times ``repeats`` rounds of the loop's per-step flag broadcast, as Lightning does it."""

    def __init__(self, output: Path, repeats: int) -> None:
        self.output, self.repeats = output, repeats

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rounds = []
        for _ in range(5):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(self.repeats):
                flag = torch.tensor([0], device=trainer.strategy.root_device)
                dist.broadcast(flag, src=0)
                flag.item()
            rounds.append((time.perf_counter() - start) / self.repeats)
        if trainer.is_global_zero:
            self.output.write_text(json.dumps({"broadcast_seconds": statistics.median(rounds)}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per process (default 200)")
    parser.add_argument("--batch-size", type=int, default=64, help="per process (default 64)")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per process on a 2-core machine
    # One folder for both processes: Lightning starts rank 1 by running this script again.
    out = Path(tempfile.gettempdir()) / "lightning_cnn_ddp_sync"
    out.mkdir(exist_ok=True)
    timer = ThroughputTimer(str(out / "timing.json"), warmup_steps=10)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo"),
        max_epochs=1,
        limit_train_batches=10 + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, BroadcastTimer(out / "broadcast.json", repeats=500)],
    )
    model = ImageClassifier(TwoConvNet(), optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.5))
    data = MNISTDataModule(data_dir=str(args.data_dir.resolve()), batch_size=args.batch_size, val_split=5000)
    trainer.fit(model, datamodule=data)
    if trainer.is_global_zero:
        timing = json.loads((out / "timing.json").read_text())
        step = timing["train_seconds"] / args.steps
        broadcast = json.loads((out / "broadcast.json").read_text())["broadcast_seconds"]
        print(f"2 gloo processes, 1 thread each, TwoConvNet, batch {args.batch_size} per process, {args.steps} steps")
        print("| measurement | ms |")
        print("|---|---:|")
        print(f"| training step (mean) | {1000 * step:.3f} |")
        print(f"| flag broadcast + .item() (median of 5 x 500) | {1000 * broadcast:.3f} |")
        print(f"\nthe per-step broadcast is {100 * broadcast / step:.2f}% of a step")


if __name__ == "__main__":
    main()
