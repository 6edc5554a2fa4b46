"""The run record: ``summary.json`` in each run folder, what a run was and what it reached.

Written by :class:`~lightning_cnn.callbacks.run_record.RunRecorder` at every epoch end, at the end
(or stop) of fit and at the end of test; read by ``report``, ``results`` and ``sweep``. Keys:

- ``recipe``: flat values (architecture, parameters, optimizer, lr, scheduler, batch_size, ...),
  the same as the hparams tab; ``hardware``: what fit ran on;
- ``status``: ``training``, ``stopped`` (interrupted; ``fit --ckpt_path last`` continues) or ``finished``;
- ``epochs``: training epochs completed; ``train_seconds``: wall seconds from the first step to the
  end of training, summed over the fit sessions, finished or stopped (``fit_sessions`` lists each);
- ``best``: the best validation accuracy (``val/acc``) and its epoch; ``final``: every metric of the
  last epoch; ``curves``: per metric, ``[epoch, value]`` pairs, epochs counted from 1;
- ``checkpoints``: ``best`` and ``last``, relative to the run folder (null when absent);
- ``test``: the test metrics, the checkpoint tested and the hardware (null before a test);
- ``flops_per_image``: the network's FLOPs for one image, ``forward`` and ``train`` (forward and
  backward), by Lightning's ``measure_flops``; ``images_per_second``: training images per second
  at the end of the last fit session (Lightning's ThroughputMonitor, over its last window of batches;
  null with ``throughput.monitor false`` or a fit too short to fill the window).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RECORD_FILE = "summary.json"
RECORD_FORMAT = 1


def new_record() -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "status": None,
        "recipe": {},
        "hardware": None,
        "epochs": 0,
        "train_seconds": None,
        "fit_sessions": [],
        "best": None,
        "final": {},
        "curves": {},
        "checkpoints": {"best": None, "last": None},
        "test": None,
    }


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's record, or None when the folder has none (or an unreadable one)."""
    try:
        record = json.loads((Path(run_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Replace the run's record at once (a temporary file renamed over it): a reader never sees half a file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".summary-", suffix=".json", dir=run_dir)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(record, file, indent=1, sort_keys=False)
            file.write("\n")
        os.replace(temporary, run_dir / RECORD_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def record_dirs(log_root: Path) -> list[Path]:
    """Every run folder under ``log_root`` that holds a record."""
    return [path.parent for path in Path(log_root).rglob(RECORD_FILE) if path.is_file()]
