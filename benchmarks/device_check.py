"""One command for a GPU machine: the GPU tests, the throughput and precision tables and time to 99%, recorded.

``make device-check`` (``python -m benchmarks.device_check``) runs each part in a child process of its
own with its own time limit, inside one overall deadline (8 minutes by default), and writes
``benchmarks/device_results.md`` and ``.json`` after every part, so a part that fails or runs out of
time is recorded and the others still run. Parts: the GPU-marked tests and the real-MNIST test; the
throughput table of ways (1), (4) and (5) with the dataset in device memory (32-true, bf16-mixed,
channels_last, torch.compile default and reduce-overhead); the precision table of the strong recipe on
a short schedule; time to 99% with ``configs/fast_gpu.yaml``. ``--accelerator cpu --quick`` runs every
part small on the CPU (in CI), so the script is known to work before it meets a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "device_results"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# Throughput option sets: a label and the options of benchmarks.throughput.
THROUGHPUT_OPTIONS = {
    "32-true": [],
    "bf16-mixed": ["--precision", "bf16-mixed"],
    "bf16-mixed, channels_last": ["--precision", "bf16-mixed", "--channels-last"],
    "compile (default)": ["--compile", "--compile-mode", "default"],
    "compile (reduce-overhead)": ["--compile", "--compile-mode", "reduce-overhead"],
}
STRONG_EPOCHS = 2  # the short schedule of the precision table (the recipe itself trains 15)


@dataclass(frozen=True)
class Part:
    """One part of the check: its name, its time limits (full run, --quick) and what it runs in the child."""

    name: str
    limit_s: float
    quick_limit_s: float
    run: Callable[[argparse.Namespace], dict[str, Any]]
    skip_when_quick: bool = False


# --- what each part runs (in its child process) -----------------------------------------------------------


def cli(*args: str) -> None:
    """``python -m lightning_cnn <args>`` in this process; a non-zero exit raises RuntimeError."""
    from lightning_cnn.cli import main

    try:
        main(list(args))
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise RuntimeError(f"lightning_cnn {args[0]} exited with {stop.code}") from None


def device_args(args: argparse.Namespace) -> list[str]:
    return ["--trainer.accelerator", args.accelerator, "--trainer.devices", "1", "--data.data_dir", str(args.data_dir)]


def run_tests(args: argparse.Namespace) -> dict[str, Any]:
    """The GPU-marked tests and the real-MNIST test (only the GPU-marked ones with --quick), via pytest."""
    report = Path(args.work_dir) / "tests.xml"
    selection = ["-m", "gpu"] if args.quick else ["-m", "gpu or slow", "-k", "gpu or test_quickstart_reaches"]
    command = [sys.executable, "-m", "pytest", "tests", *selection, "-q", "-p", "no:cacheprovider"]
    command += ["--junitxml", str(report)]
    env = {**os.environ, "MNIST_RAW_DIR": str(args.data_dir / "MNIST" / "raw"), "LIGHTNING_CNN_REQUIRE_MNIST": "1"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    print(completed.stdout[-4000:], completed.stderr[-2000:])
    tests = []
    for case in ElementTree.parse(report).iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = f"skipped: {child.get('message', '')}"
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0))})  # fmt: skip
    failed = [test["test"] for test in tests if test["outcome"] == "failed"]
    if completed.returncode not in (0, 5) or failed:  # 5: nothing selected
        raise RuntimeError(f"pytest exited with {completed.returncode}; failed: {', '.join(failed) or 'see the log'}")
    return {"tests": tests}


def run_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """benchmarks.throughput, ways (1), (4) and (5), with the options of ``args.option``."""
    from benchmarks import throughput

    output = Path(args.work_dir) / "throughput.json"
    compiled = "--compile" in THROUGHPUT_OPTIONS[args.option]
    if args.quick:
        sizes = ["--network", "linear", "--samples", "640", "--warmup-steps", "2", "--repeats", "1", "--threads", "1"]
    else:  # compiled ways recompile in every repeat: one repeat, more warm-up steps for the compiler
        sizes = [
            "--samples",
            "19200",
            "--repeats",
            "1" if compiled else "2",
            "--warmup-steps",
            "30" if compiled else "10",
        ]
    argv = ["--ways", "1,4,5", "--accelerator", "gpu" if args.accelerator == "gpu" else "cpu"]
    argv += ["--data-dir", str(args.data_dir), "--json", str(output), *sizes, *THROUGHPUT_OPTIONS[args.option]]
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        throughput.main(argv)
    print(table.getvalue())
    runs = json.loads(output.read_text())["runs"]
    rows = {}
    for way, results in runs.items():
        rows[way] = {
            "way": throughput.WAYS[int(way)],
            "train_samples_per_s": throughput.median_rate(results, "train"),
            "val_samples_per_s": throughput.median_rate(results, "val"),
        }
    return {"option": args.option, "rows": rows, "table": table.getvalue()}


def trained_run(log_root: Path) -> Any:  # noqa: ANN401 (a RunSummary; imported in the child only)
    from lightning_cnn.runs.summary import collect_runs

    runs = collect_runs(log_root)
    if len(runs) != 1:
        raise RuntimeError(f"expected one run under {log_root}, found {len(runs)}")
    return runs[0]


def run_precision(args: argparse.Namespace) -> dict[str, Any]:
    """The strong recipe at each precision on a short schedule: training samples/s and test accuracy."""
    precisions = ["32-true", "bf16-mixed"] if args.quick else ["32-true", "bf16-mixed", "16-mixed"]
    schedule = ["--trainer.max_epochs", "1" if args.quick else str(STRONG_EPOCHS)]
    if args.quick:
        schedule += ["--trainer.limit_train_batches", "15", "--trainer.limit_val_batches", "2"]
        schedule += ["--trainer.limit_test_batches", "2", "--data.eval_batch_size", "250"]
    rows = []
    for precision in precisions:
        log_root = Path(args.work_dir) / precision
        timing = log_root / "timing.json"
        log_root.mkdir(parents=True, exist_ok=True)
        timer = {
            "class_path": "benchmarks.timing.ThroughputTimer",
            "init_args": {"output": str(timing), "warmup_steps": 5 if args.quick else 20},
        }
        common = ["--config", str(REPO / "configs" / "strong_batchnorm_cnn.yaml"), *device_args(args), *schedule]
        common += ["--trainer.precision", precision, "--trainer.logger.init_args.save_dir", str(log_root)]
        common += ["--trainer.enable_progress_bar", "false"]
        cli("fit", *common, f"--trainer.callbacks+={json.dumps(timer)}")
        cli("test", *common, "--ckpt_path", "best")
        measured = json.loads(timing.read_text())
        run = trained_run(log_root)
        rows.append({
            "precision": precision,
            "train_samples_per_s": measured["train_samples"] / measured["train_seconds"],
            "test_acc": run.test_acc,
            "epochs": run.epochs,
            "hardware": run.hardware,
        })  # fmt: skip
    return {"schedule": " ".join(schedule), "rows": rows}


def run_time_to_99(args: argparse.Namespace) -> dict[str, Any]:
    """``configs/fast_gpu.yaml``: training seconds (first step to the end of training) and test accuracy."""
    log_root = Path(args.work_dir) / "fast_gpu"
    common = ["--config", str(REPO / "configs" / "fast_gpu.yaml"), *device_args(args)]
    common += ["--trainer.logger.init_args.save_dir", str(log_root)]
    if args.quick:
        common += ["--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1"]
        common += ["--trainer.limit_train_batches", "10", "--trainer.limit_test_batches", "1"]
    started = time.perf_counter()
    cli("fit", *common)
    fit_seconds = time.perf_counter() - started
    cli("test", *common, "--ckpt_path", "best")
    run = trained_run(log_root)
    return {
        "train_seconds": run.train_seconds,
        "fit_command_seconds_in_process": fit_seconds,
        "test_acc": run.test_acc,
        "epochs": run.epochs,
        "hardware": run.hardware,
        "reached_99": run.test_acc is not None and run.test_acc >= 0.99,
    }


def throughput_part(option: str, limit_s: float) -> Part:
    return Part(f"throughput: {option}", limit_s, 90, run_throughput, skip_when_quick=option != "32-true")


# Worst-case limits; a typical run takes well under them. The compiled throughput comes last: if
# compiling runs long, the overall deadline cuts it short, not the tables the README waits for.
PARTS = [
    Part("tests", 100, 90, run_tests),
    *(throughput_part(option, 50) for option in THROUGHPUT_OPTIONS if "compile" not in option),
    Part("precision: strong recipe", 75, 120, run_precision),
    Part("time to 99%: fast_gpu.yaml", 45, 90, run_time_to_99),
    *(throughput_part(option, 90) for option in THROUGHPUT_OPTIONS if "compile" in option),
]


# --- the parent: parts in child processes, results written as they come -------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument(
        "--quick", action="store_true", help="every part small (CI, on the CPU): minutes become seconds"
    )
    parser.add_argument("--deadline", type=float, default=480, help="seconds for all parts together (default 480)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results path without suffix (default {OUT.relative_to(REPO)}; with --quick, a temporary folder's, "
        "so that a check of the script never replaces a GPU's results)",
    )
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="holds MNIST/raw (default data/)")
    parser.add_argument("--parts", help="run only the parts whose names start with these, comma-separated")
    # The child's side: which part to run, and where to write its result.
    parser.add_argument("--run-part", help=argparse.SUPPRESS)
    parser.add_argument("--option", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir.resolve()
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "lightning_cnn_device_check" / OUT.name if args.quick else OUT
    return args


def ensure_mnist(data_dir: Path) -> None:
    """Copy the official archives into ``data_dir/MNIST/raw`` from $MNIST_RAW_DIR or ../shared/data, if missing."""
    raw = data_dir / "MNIST" / "raw"
    if all((raw / name).is_file() for name in MNIST_FILES):
        return
    for candidate in (os.environ.get("MNIST_RAW_DIR"), REPO.parent / "shared" / "data" / "MNIST" / "raw"):
        if candidate and all((Path(candidate) / name).is_file() for name in MNIST_FILES):
            raw.mkdir(parents=True, exist_ok=True)
            for name in MNIST_FILES:
                shutil.copy(Path(candidate) / name, raw / name)
            return
    # Otherwise the data module downloads them, or says in one line how to get them.


def run_part(part: Part, args: argparse.Namespace, seconds: float, work_dir: Path) -> dict[str, Any]:
    """Run ``part`` in a child process for at most ``seconds``; its status, time, result and log tail."""
    result_file = work_dir / "result.json"
    command = [sys.executable, "-m", "benchmarks.device_check", "--run-part", part.name, "--result", str(result_file)]
    command += ["--work-dir", str(work_dir), "--accelerator", args.accelerator, "--data-dir", str(args.data_dir)]
    command += ["--quick"] * args.quick
    if part.name.startswith("throughput: "):
        command += ["--option", part.name.removeprefix("throughput: ")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if args.accelerator == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # on a shared CPU, more threads only wait on each other
    log = work_dir / "log.txt"
    started = time.perf_counter()
    with open(log, "w") as output:
        # A session of its own, so that a part out of time is stopped with every process it started.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=output, start_new_session=True)
        try:
            process.wait(timeout=seconds)
            status = "ok" if process.returncode == 0 and result_file.is_file() else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            status = f"out of time ({seconds:.0f} s)"
    record: dict[str, Any] = {"part": part.name, "status": status, "seconds": round(time.perf_counter() - started, 1)}
    if result_file.is_file():
        record["result"] = json.loads(result_file.read_text())
    if status != "ok":
        record["log_tail"] = log.read_text(errors="replace")[-3000:]
    return record


def child(args: argparse.Namespace) -> None:
    part = next(part for part in PARTS if part.name == args.run_part)
    args.result.write_text(json.dumps(part.run(args), indent=1, default=str))


def environment(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    import torch

    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" and torch.cuda.is_available() else "CPU"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": args.quick,
        "command": " ".join(["python -m benchmarks.device_check", *argv]),
    }


def markdown(env: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The results as the README's tables: one section per part, with its status and time."""
    lines = [
        "# Device check results",
        "",
        f"{env['device']}; torch {env['torch']} (CUDA {env['cuda']}); {env['date']}; `{env['command']}`"
        + (" (--quick: every part small, numbers are not benchmarks)" if env["quick"] else ""),
        "",
        "| part | status | seconds |",
        "|---|---|---:|",
        *(f"| {record['part']} | {record['status']} | {record['seconds']} |" for record in records),
    ]
    for record in records:
        result = record.get("result")
        lines += ["", f"## {record['part']}", ""]
        if result is None and "log_tail" not in record:
            lines.append(f"Not run: {record['status']}.")
            continue
        if result is None:
            lines += [f"No result: {record['status']}. The end of its log:", "", "```", record["log_tail"], "```"]
            continue
        if record["part"] == "tests":
            lines += ["| test | outcome | seconds |", "|---|---|---:|"]
            lines += [f"| `{t['test']}` | {t['outcome']} | {t['seconds']:.1f} |" for t in result["tests"]]
        elif record["part"].startswith("throughput"):
            rows = result["rows"]
            base = rows.get("1", {}).get("train_samples_per_s")
            lines += ["| way | train samples/s | vs (1) | val samples/s |", "|---|---:|---:|---:|"]
            for row in rows.values():
                ratio = f"{row['train_samples_per_s'] / base:.2f}x" if base else "-"
                lines.append(
                    f"| {row['way']} | {row['train_samples_per_s']:,.0f} | {ratio} | {row['val_samples_per_s']:,.0f} |"
                )
        elif record["part"].startswith("precision"):
            lines += [f"`strong_batchnorm_cnn.yaml` with `{result['schedule']}`, tested on the best checkpoint.", ""]
            lines += ["| precision | train samples/s | test accuracy | epochs | device |", "|---|---:|---:|---:|---|"]
            for row in result["rows"]:
                accuracy = f"{100 * row['test_acc']:.2f}%" if row["test_acc"] is not None else "-"
                lines.append(
                    f"| {row['precision']} | {row['train_samples_per_s']:,.0f} | {accuracy} | {row['epochs']} | "
                    f"{row['hardware']} |"
                )
        elif record["part"].startswith("time to 99"):
            accuracy = f"{100 * result['test_acc']:.2f}%" if result["test_acc"] is not None else "-"
            lines += [
                "| training seconds | test accuracy | epochs | reached 99% | device |",
                "|---:|---:|---:|---|---|",
                f"| {result['train_seconds']:.2f} | {accuracy} | {result['epochs']} | "
                f"{'yes' if result['reached_99'] else 'no'} | {result['hardware']} |",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_part:
        child(args)
        return 0
    if args.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            print(
                "error: no CUDA device is visible; run with --accelerator cpu --quick to check the script",
                file=sys.stderr,
            )
            return 1
    ensure_mnist(args.data_dir)
    env = environment(args, sys.argv[1:] if argv is None else argv)
    deadline = time.perf_counter() + args.deadline
    records: list[dict[str, Any]] = []
    selected = [p for p in PARTS if not args.parts or any(p.name.startswith(s) for s in args.parts.split(","))]
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        for index, part in enumerate(selected):
            if args.quick and part.skip_when_quick:
                records.append({"part": part.name, "status": "skipped (--quick)", "seconds": 0})
                continue
            seconds = min(part.quick_limit_s if args.quick else part.limit_s, deadline - time.perf_counter())
            if seconds < 10:
                records.append({"part": part.name, "status": "skipped (out of the overall deadline)", "seconds": 0})
                continue
            work_dir = Path(tmp) / str(index)
            work_dir.mkdir()
            record = run_part(part, args, seconds, work_dir)
            records.append(record)
            print(f"{part.name}: {record['status']} ({record['seconds']} s)", file=sys.stderr, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps({"environment": env, "parts": records}, indent=1))
            args.out.with_suffix(".md").write_text(markdown(env, records))
    args.out.with_suffix(".json").write_text(json.dumps({"environment": env, "parts": records}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(env, records))
    print(markdown(env, records))
    print(f"written: {args.out.with_suffix('.md')} and .json", file=sys.stderr)
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
