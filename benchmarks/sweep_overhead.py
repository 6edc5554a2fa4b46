"""What the sweep machinery costs per trial: a sweep of one-epoch quickstart trials (each fitted and tested),
against the same fits and tests run directly through ``main`` in the same process, in one run.

The difference is Optuna's storage, the study lock, the per-trial bookkeeping, the pruning
callback, and the sweep's own start and tables spread over its trials; the runs are the same. Usage:
``python -m benchmarks.sweep_overhead --data_dir data --trials 3`` (the official MNIST files under
``<data_dir>/MNIST/raw``; any MNIST-format folder works).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from lightning_cnn import cli
from lightning_cnn.tools import sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def quiet(call, *args) -> float:  # noqa: ANN001
    """Seconds ``call(*args)`` took, its output swallowed."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            call(*args)
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise RuntimeError(f"{call.__module__} exited with {stop.code}") from None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--trials", type=int, default=3)
    options = parser.parse_args()
    common = [
        f"--data.data_dir={options.data_dir}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--data.download=false",
    ]
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        logger = f"--trainer.logger.init_args.save_dir={root}"
        direct = []
        for index in range(options.trials):
            name = f"--trainer.logger.init_args.name=direct{index}"
            fit = ["fit", "--config", str(QUICKSTART), *common, logger, name]
            seconds = quiet(cli.main, fit)
            last = root / f"direct{index}" / "version_0" / "checkpoints" / "last.ckpt"
            test = ["test", "--config", str(QUICKSTART), *common, logger, name, f"--ckpt_path={last}"]
            direct.append(seconds + quiet(cli.main, test))
        spec = {
            "name": "overhead",
            "config": str(QUICKSTART),
            "search": {"model.scheduler.init_args.max_lr": {"type": "float", "low": 0.009, "high": 0.011}},
            "sampler": "random",
            "pruner": "median",
            "n_trials": options.trials,
            "test": "every",
        }
        path = root / "sweep.yaml"
        path.write_text(yaml.safe_dump(spec))
        swept = [quiet(sweep.main, [str(path), "--log_root", str(root), "--", *common]) / options.trials]
    rows = [("direct: main(['fit', ...]) + main(['test', ...])", direct), ("sweep, per trial", swept)]
    print("| way | seconds per trial (median) | each |")
    print("|---|---:|---|")
    for name, seconds in rows:
        print(f"| {name} | {statistics.median(seconds):.2f} | {', '.join(f'{value:.2f}' for value in seconds)} |")
    overhead = statistics.median(swept) - statistics.median(direct)
    share = overhead / statistics.median(direct)
    print(f"\nsweep machinery: {overhead:+.2f} s per trial, {share:+.1%} of a direct one-epoch fit (target: under 5%)")


if __name__ == "__main__":
    main()
