"""Run folders: ``<save_dir>/<experiment>/version_<n>``, how they are named, listed and claimed.

A new run claims its folder with an exclusive create, so runs started at the same moment (sweep
workers, two terminals) never share one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lightning_cnn.errors import UserError


def version_number(run_dir: Path) -> int:
    """The n of a ``version_<n>`` run folder, or -1 for any other folder."""
    match = re.fullmatch(r"version_(\d+)", run_dir.name)
    return int(match.group(1)) if match else -1


def run_folder_name(version: int | str) -> str:
    """The folder TensorBoardLogger writes a run to: ``version_<n>`` for a number, the string itself otherwise."""
    return version if isinstance(version, str) else f"version_{version}"


def run_versions(experiment_dir: Path) -> list[Path]:
    """The ``version_<n>`` run folders of one experiment, newest (highest n) first."""
    return sorted(experiment_dir.glob("version_*"), key=version_number, reverse=True)


def claim_run_folder(experiment_dir: Path) -> int:
    """Create the next free ``version_<n>`` folder of ``experiment_dir`` and return its n.

    The folder is created with an exclusive ``mkdir``: of several processes asking at once, each
    gets its own n (TensorBoardLogger's own choice, the highest n plus one, is not atomic).
    """
    try:
        experiment_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create the log folder {experiment_dir} ({error.strerror}); set trainer.logger.init_args.save_dir "
            "to a folder you can write"
        ) from None
    existing = run_versions(experiment_dir)
    version = version_number(existing[0]) + 1 if existing else 0
    while True:
        try:
            (experiment_dir / run_folder_name(version)).mkdir()
            return version
        except FileExistsError:
            version += 1
        except OSError as error:
            raise UserError(
                f"cannot create a run folder in {experiment_dir} ({error.strerror}); set "
                "trainer.logger.init_args.save_dir to a folder you can write"
            ) from None


def remove_unfinished_run(run_dir: Path) -> None:
    """Remove a run folder that a failed command claimed before anything was trained (it holds no checkpoint)."""
    if run_dir.is_dir() and not any(run_dir.rglob("*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)
