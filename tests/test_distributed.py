"""Distributed data parallel on real processes: 2 CPU processes over gloo, and two simulated nodes under torchrun.

Every run is a process group of its own with a deadline; whatever is left of it (Lightning's child ranks,
torchrun's workers, which start sessions of their own) is killed when the test ends, passed or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, free_port, make_synthetic_mnist, read_events
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.core.saving import load_hparams_from_yaml

from lightning_cnn.data import TensorBatchLoader

TESTS = Path(__file__).resolve().parent
LAUNCH_TIMEOUT = 90  # seconds per launch; DDP start-up on 2 shared cores takes about 20
NUM_TRAIN, VAL_SPLIT = 600, 129  # 471 training images: ranks hold 236 and 235; validation ranks hold 65 and 64
BATCH_SIZE, EVAL_BATCH_SIZE = 128, 16  # 16 does not divide 64: the shorter validation shard is re-split
COMMON_ARGS = [
    "--config", str(REPO / "configs" / "quickstart.yaml"),
    "--data.data_dir", "data",
    "--data.val_split", str(VAL_SPLIT),
    "--data.batch_size", str(BATCH_SIZE),
    "--data.eval_batch_size", str(EVAL_BATCH_SIZE),
    "--trainer.logger.init_args.save_dir", "logs",
]  # fmt: skip
PROBE_WARNING = "a warning that every rank raises"
DDP_CPU = ["--config", str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")]


class ShardRecorder(Callback):
    """Writes, per rank and epoch, the indices each loader assigned to this rank and the labels it actually yielded."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {}

    @staticmethod
    def _describe(loader: TensorBatchLoader) -> dict:
        indices = loader.shard_indices()
        return {
            "loader": type(loader).__name__,
            "rank": loader.rank,
            "world_size": loader.world_size,
            "size": len(loader.labels),
            "indices": indices.tolist(),
            "expected_labels": loader.labels[indices.to(loader.labels.device)].tolist(),
            "seen_labels": [],
            "batches": 0,
        }

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        warnings.warn(PROBE_WARNING, UserWarning, stacklevel=1)  # raised by every rank alike

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.record = {"train": self._describe(trainer.train_dataloader)}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self.record["train"]["seen_labels"] += batch[1].tolist()
        self.record["train"]["batches"] += 1

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.record["val"] = self._describe(trainer.val_dataloaders)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if not trainer.sanity_checking:
            self.record["val"]["seen_labels"] += batch[1].tolist()
            self.record["val"]["batches"] += 1

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            path = self.out_dir / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
            path.write_text(json.dumps(self.record))


# ---------------------------------------------------------------- process handling


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, read from /proc (torchrun's workers sit in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and waiting to be reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group and every descendant's group; a no-op for what has already exited."""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        for kill in (lambda p: os.killpg(os.getpgid(p), signal.SIGKILL), lambda p: os.kill(p, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid)
    proc.wait(timeout=10)


def run_processes(commands: list[list[str]], cwd: Path, timeout: float = LAUNCH_TIMEOUT) -> list[tuple[int, str]]:
    """Start ``commands`` together, each in a new session; return each one's exit code and output.

    All must finish within ``timeout`` seconds in all; on timeout, failure or success alike, every process
    they started is killed before returning.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONWARNINGS", None)  # warnings stay visible, so that repeated ones would show
    env["OMP_NUM_THREADS"] = "1"  # two processes on two cores: no thread oversubscription
    procs, logs = [], []
    try:
        for index, command in enumerate(commands):
            log = open(cwd / f"process{index}.log", "w+")  # noqa: SIM115 (closed in finally)
            logs.append(log)
            popen = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            procs.append(popen)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        results = []
        for proc, log in zip(procs, logs, strict=True):
            log.seek(0)
            results.append((proc.returncode, log.read()))
        for (code, output), command in zip(results, commands, strict=True):
            if code is None:
                pytest.fail(f"{' '.join(command)} did not finish within {timeout} s; output:\n{output[-3000:]}")
        return results
    finally:
        for proc in procs:
            kill_tree(proc)
        for log in logs:
            log.close()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lightning_cnn", *args]


def scalars(run_dir: Path) -> dict[str, list[float]]:
    events = read_events(run_dir)
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_launch_past_its_deadline_fails_and_leaves_no_process_behind(tmp_path):
    # A launcher whose worker starts a session of its own, as torchrun's do, and both hang.
    pid_file = tmp_path / "worker.pid"
    hang = "import time; time.sleep(600)"
    launcher = (
        "import subprocess, sys, time;"
        f"worker = subprocess.Popen([sys.executable, '-c', {hang!r}], start_new_session=True);"
        f"open({str(pid_file)!r}, 'w').write(str(worker.pid)); time.sleep(600)"
    )
    with pytest.raises(pytest.fail.Exception, match="did not finish within 10 s"):
        run_processes([[sys.executable, "-c", launcher]], tmp_path, timeout=10)
    worker = int(pid_file.read_text())
    for _ in range(50):
        if not alive(worker):
            break
        time.sleep(0.1)
    assert not alive(worker)


def check_ok(result: tuple[int, str]) -> str:
    code, output = result
    assert code == 0, output[-3000:]
    return output


# ---------------------------------------------------------------- the loader, in process


@pytest.mark.parametrize("num_samples", [10, 11, 129, 471])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [4, 16])
def test_shards_are_disjoint_cover_the_split_and_keep_ranks_in_step(num_samples, world_size, batch_size):
    labels = torch.arange(num_samples)
    images = torch.zeros(num_samples, 1, 2, 2, dtype=torch.uint8)
    for epoch in (0, 1):
        seen, lengths = [], set()
        for rank in range(world_size):
            loader = TensorBatchLoader(images, labels, batch_size, True, 7, rank, world_size)
            loader.set_epoch(epoch)
            batches = [batch_labels.tolist() for _, batch_labels in loader]
            assert len(batches) == len(loader)
            assert all(batch for batch in batches)  # no empty batch
            assert sum(batches, []) == loader.shard_indices().tolist()  # it yields exactly its shard, in order
            lengths.add(len(batches))
            seen += sum(batches, [])
        assert sorted(seen) == list(range(num_samples))  # disjoint and covering
        assert len(lengths) == 1  # every rank runs the same number of steps


def test_shuffle_order_is_shared_by_ranks_and_changes_with_the_epoch():
    labels = torch.arange(100)
    images = torch.zeros(100, 1, 2, 2, dtype=torch.uint8)
    loaders = [TensorBatchLoader(images, labels, 8, True, 3, rank, 2) for rank in range(2)]
    orders = []
    for epoch in (0, 1):
        for loader in loaders:
            loader.set_epoch(epoch)
        order = torch.stack([loader.shard_indices() for loader in loaders], dim=1).flatten()
        assert sorted(order.tolist()) == list(range(100))
        orders.append(order.tolist())
    assert orders[0] != orders[1]


# ---------------------------------------------------------------- 2 processes through the CLI


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 2-epoch fit in 2 CPU processes (strategy ddp, gloo), with the shard recorder attached."""
    cwd = tmp_path_factory.mktemp("ddp_fit")
    make_synthetic_mnist(cwd / "data", num_train=NUM_TRAIN)
    shards = cwd / "shards"
    shards.mkdir()
    recorder = {"class_path": "test_distributed.ShardRecorder", "init_args": {"out_dir": str(shards)}}
    (cwd / "recorder.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": [recorder]}}))
    args = [*COMMON_ARGS, *DDP_CPU, "--config", "recorder.yaml", "--trainer.max_epochs", "2"]
    [result] = run_processes([cli("fit", *args)], cwd)
    return {"cwd": cwd, "output": check_ok(result), "shards": shards}


def test_ddp_fit_writes_one_run_folder_and_one_set_of_checkpoints(ddp_fit):
    cwd = ddp_fit["cwd"]
    assert not (cwd / "lightning_logs").exists()  # no rank fell back to the default log folder
    runs = list((cwd / "logs" / "quickstart").iterdir())
    assert [run.name for run in runs] == ["version_0"]
    run = runs[0]
    checkpoints = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and checkpoints[1] == "last.ckpt" and checkpoints[0].startswith("best-epoch")
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank zero alone writes TensorBoard events
    assert (run / "config.yaml").is_file()
    hparams = load_hparams_from_yaml(run / "hparams.yaml")
    assert hparams["global_batch_size"] == BATCH_SIZE * 2 and hparams["world_size"] == 2
    assert scalars(run)["global_batch_size"] == [BATCH_SIZE * 2]


def test_ddp_console_output_is_not_repeated_by_the_second_rank(ddp_fit):
    output = ddp_fit["output"]
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output  # really two processes
    assert "distributed_backend=gloo" in output
    assert output.count(f"Global batch size: {BATCH_SIZE * 2} = {BATCH_SIZE} per device x 2 devices") == 1
    assert output.count("Total params") == 1  # the model summary
    assert output.count("`Trainer.fit` stopped") == 1
    assert output.count(PROBE_WARNING) == 1  # rank one keeps its warnings to itself


def test_ddp_train_shards_are_disjoint_and_cover_the_split_each_epoch(ddp_fit):
    shards = ddp_fit["shards"]
    orders = []
    for epoch in (0, 1):
        records = [json.loads((shards / f"rank{rank}_epoch{epoch}.json").read_text()) for rank in (0, 1)]
        for split, size in (("train", NUM_TRAIN - VAL_SPLIT), ("val", VAL_SPLIT)):
            parts = [record[split] for record in records]
            for rank, part in enumerate(parts):
                # The fast path is kept: Lightning hands the project's loader to each rank unchanged.
                described = (part["loader"], part["rank"], part["world_size"], part["size"])
                assert described == ("TensorBatchLoader", rank, 2, size)
                assert part["seen_labels"] == part["expected_labels"]  # what was trained on is the shard, in order
            assert parts[0]["batches"] == parts[1]["batches"]
            indices = parts[0]["indices"] + parts[1]["indices"]
            assert sorted(indices) == list(range(size))  # disjoint, together the whole split
        orders.append(records[0]["train"]["indices"])
    assert orders[0] != orders[1]  # reshuffled each epoch


def test_ddp_validation_accuracy_equals_single_process_evaluation(ddp_fit):
    cwd = ddp_fit["cwd"]
    # Weights after three optimizer steps (about 40% right), so that equal accuracies say something: the
    # 2-epoch DDP run can reach 100% on the easy synthetic digits, and one step can leave 0%.
    brief = [*COMMON_ARGS, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    [result] = run_processes([cli("fit", *brief, "--trainer.logger.init_args.name", "three_steps")], cwd)
    check_ok(result)
    checkpoint = cwd / "logs" / "three_steps" / "version_0" / "checkpoints" / "last.ckpt"
    results = {}
    for name, extra in (("one", ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]), ("two", DDP_CPU)):
        args = [*COMMON_ARGS, *extra, "--trainer.logger.init_args.name", name, "--ckpt_path", str(checkpoint)]
        [result] = run_processes([cli("validate", *args)], cwd)
        output = check_ok(result)
        assert output.count("Validate metric") == 1  # the results table, printed by rank zero only
        [run] = (cwd / "logs" / name).iterdir()
        results[name] = scalars(run)
    one, two = results["one"], results["two"]
    assert 0.0 < one["val/acc"][0] < 1.0, one
    assert two["val/acc"] == one["val/acc"]  # correct / total over all 129 images: exact
    assert two["val/loss"] == pytest.approx(one["val/loss"], abs=1e-6)  # float sums in another order


# ---------------------------------------------------------------- two nodes under torchrun


def test_two_nodes_under_torchrun_complete_and_checkpoint_once(tmp_path):
    make_synthetic_mnist(tmp_path / "data", num_train=NUM_TRAIN)
    port = free_port()
    fit = [
        "-m", "lightning_cnn", "fit", *COMMON_ARGS,
        "--trainer.max_epochs", "1",
        "--trainer.num_nodes", "2",
        "--trainer.devices", "1",
        "--trainer.strategy", "ddp",
        "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    nodes = [
        [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node_rank),
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            *fit,
        ]
        for node_rank in (0, 1)
    ]  # fmt: skip
    outputs = [check_ok(result) for result in run_processes(nodes, tmp_path)]
    assert "MEMBER: 1/2" in outputs[0] and "MEMBER: 2/2" in outputs[1]  # one world of 2, one rank per node
    assert "Total params" in outputs[0] and "Total params" not in outputs[1]
    [run] = (tmp_path / "logs" / "quickstart").iterdir()
    checkpoints = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and checkpoints[1] == "last.ckpt" and checkpoints[0].startswith("best-epoch00")
    assert not (tmp_path / "lightning_logs").exists()
    hparams = load_hparams_from_yaml(run / "hparams.yaml")
    assert hparams["global_batch_size"] == BATCH_SIZE * 2 and hparams["world_size"] == 2
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0 and state["global_step"] == 2  # 236 images per rank at 128 per batch
