"""Where a sweep's Optuna study lives, and the lock its workers take to hand out trials one at a time.

The default is Optuna's journal file in the sweep's folder (processes on one machine append to it
safely); ``--storage`` names any Optuna RDB URL (``postgresql://...``) that workers on several
machines share. Deciding whether there is a trial left and creating it happen under one lock (a
file lock on one machine, a PostgreSQL advisory lock across machines), so a study never runs more
than ``n_trials`` trials, and never a grid point twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from lightning_cnn.errors import UserError

JOURNAL_FILE = "optuna.journal"
# An RDB trial whose worker stops beating for GRACE_SECONDS (SIGKILL, a lost machine) is failed and run again.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60


def hidden_password(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_storage(url: str | None, sweep_dir: Path) -> BaseStorage:
    """The journal file in ``sweep_dir``, or the RDB at ``url``; one clear error when it cannot be reached."""
    if url is None:
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL_FILE)))
        except OSError as error:
            raise UserError(
                f"cannot write the study into {sweep_dir} ({error.strerror}); pass a writable --log_root"
            ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable for years
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
    except ImportError as error:
        raise UserError(
            f"--storage {hidden_password(url)} needs a database driver that is not installed"
            f"{f' ({error.name})' if error.name else ''}; for PostgreSQL: pip install 'lightning_cnn[postgres]'"
        ) from None
    except Exception as error:  # noqa: BLE001 (SQLAlchemy raises several kinds for a bad or unreachable URL)
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise UserError(
            f"cannot reach the study storage {hidden_password(url)} ({reason}); check the URL, that the server runs "
            "and that it accepts this user, or leave --storage out to keep the study in the sweep's folder"
        ) from None


class StudyLock:
    """A lock shared by every worker of one study: taken before asking for a trial, released once it exists."""

    def __init__(self, url: str | None, sweep_dir: Path, study_name: str) -> None:
        self.url, self.sweep_dir, self.study_name = url, sweep_dir, study_name
        self._file = None
        self._connection = None
        self.held = False

    def _key(self) -> int:
        digest = hashlib.sha256(f"lightning_cnn sweep {self.study_name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def acquire(self) -> None:
        if self.url is not None and self.url.startswith("postgresql"):
            import sqlalchemy

            if self._connection is None:
                self._connection = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool).connect()
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key()})
            self._connection.commit()
        else:
            # One machine (a journal file, or SQLite): a file lock beside the study.
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.sweep_dir / ".study.lock", "a")  # noqa: SIM115 (held across calls)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._connection is not None:
            import sqlalchemy

            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key()})
            self._connection.commit()
        elif self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @contextmanager
    def held_for(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def close(self) -> None:
        self.release()
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    # A grid's points are enqueued once each (see study.prepare_study): the sampler never picks them.
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()
