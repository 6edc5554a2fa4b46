"""The tutorials' own training loops, run in plain PyTorch over several seeds: how much do their figures vary?

Each tutorial reports one run. This script runs its loop as the tutorial wrote it (torchvision MNIST
with ``ToTensor`` + ``Normalize``, a shuffling ``DataLoader``, the same network, optimizer, batch and
epochs, no Lightning) once per seed and prints each run's accuracy and the mean and spread, so a
figure from ``lightning_cnn`` can be compared with the spread of the recipe itself rather than with
a single draw. Recipes:

- ``seed000_two_conv`` / ``seed000_three_conv``: SGD lr 0.01 momentum 0.5, batch 64, 10 epochs on
  all 60k training images; the official test set after the last epoch (the tutorials' 98.59% / 98.75%).
- ``seed001_conv_mlp``: Adam lr 0.01, batch 64, ``random_split`` 80/20 of the training images; the
  validation accuracy after ``--epochs`` (default 1; the tutorial's 96-97%).

Usage: ``python -m benchmarks.seed_loops seed000_three_conv --seeds 0 1 2``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import transforms
from torchvision.datasets import MNIST

from lightning_cnn.models import ConvMLPNet, ThreeConvNet, TwoConvNet

REPO = Path(__file__).resolve().parents[1]
TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


@dataclass(frozen=True)
class Recipe:
    network: Callable[[], nn.Module]
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    epochs: int
    holdout: float  # fraction of the training images held out for validation (0: test on the official test set)


RECIPES = {
    "seed000_two_conv": Recipe(TwoConvNet, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5), 10, 0.0),
    "seed000_three_conv": Recipe(ThreeConvNet, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5), 10, 0.0),
    "seed001_conv_mlp": Recipe(ConvMLPNet, lambda p: torch.optim.Adam(p, lr=0.01), 1, 0.2),
}


def accuracy(network: nn.Module, dataset: Dataset) -> float:
    network.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(dataset, batch_size=1000):
            correct += (network(images).argmax(dim=1) == labels).sum().item()
    return 100.0 * correct / len(dataset)


def run(recipe: Recipe, seed: int, epochs: int, data_dir: Path) -> dict[str, float]:
    torch.manual_seed(seed)
    train = MNIST(data_dir, train=True, transform=TRANSFORM)
    if recipe.holdout:  # as seed 001: random_split with the global generator
        train_size = int((1 - recipe.holdout) * len(train))
        train, evaluation = random_split(train, [train_size, len(train) - train_size])
    else:
        evaluation = MNIST(data_dir, train=False, transform=TRANSFORM)
    network = recipe.network()
    optimizer = recipe.optimizer(network.parameters())
    start = time.perf_counter()
    for _ in range(epochs):
        network.train()
        for images, labels in DataLoader(train, batch_size=64, shuffle=True):
            optimizer.zero_grad()
            F.cross_entropy(network(images), labels).backward()
            optimizer.step()
    return {"seed": seed, "accuracy": accuracy(network, evaluation), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="default: the tutorial's")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="holds MNIST/raw (default data/)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the runs to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    epochs = args.epochs or recipe.epochs
    split = "validation (80/20 random_split)" if recipe.holdout else "test"
    print(f"{args.recipe}: {epochs} epochs, {split} accuracy after the last epoch")
    runs = []
    for seed in args.seeds:
        runs.append(run(recipe, seed, epochs, args.data_dir))
        print(f"  seed {seed}: {runs[-1]['accuracy']:.2f}% ({runs[-1]['seconds']:.0f} s)", flush=True)
    values = [r["accuracy"] for r in runs]
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    print(f"  mean {statistics.mean(values):.2f}%{spread} over {len(values)} seeds")
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "epochs": epochs, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
