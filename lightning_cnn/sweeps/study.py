"""The study a sweep file describes, and the loop each worker runs: take a trial under the lock, run it, repeat.

A grid's points (or a file's listed runs) are enqueued once, when the study is made, as the
parameter ``configuration``; a search samples its space with the study's sampler. A trial whose
worker died (SIGKILL; on an RDB, a lost heartbeat) or was stopped (Ctrl+C, SIGTERM) is failed
and run again from the start; a trial that fails on its own (a NaN loss, a bad value, a crash) is
kept with its error line and counts as tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from lightning_cnn.errors import UserError
from lightning_cnn.sweeps.spec import SweepSpec
from lightning_cnn.sweeps.storage import StudyLock, make_pruner, make_sampler

CONFIGURATION = "configuration"  # the categorical parameter that names a grid point or a listed run
HOST = socket.gethostname()


def fingerprint(spec: SweepSpec) -> str:
    """What makes two sweep files the same study: the configs, overrides, grid, search, seeds and objective."""
    described = {
        "configs": spec.configs,
        "overrides": spec.overrides,
        "configurations": spec.configurations,
        "search": {
            key: vars(parameter) | {"choices": list(parameter.choices)} for key, parameter in spec.search.items()
        },
        "seeds": spec.seeds,
        "sampler": spec.sampler,
        "metric": spec.metric,
        "direction": spec.direction,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_create_study(
    spec: SweepSpec, storage: BaseStorage, lock: StudyLock, sampler_seed: int | None
) -> optuna.Study:
    """The sweep's study, made (with its grid enqueued) by the first worker to get here, loaded by the others."""
    with lock.held_for():
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(spec.sampler, sampler_seed),
            pruner=make_pruner(spec.pruner),
            direction=spec.direction,
            load_if_exists=True,
        )
        made_from = study.user_attrs.get("sweep")
        if made_from is None:
            if spec.sampler == "grid":
                for index, name in enumerate(spec.configurations):
                    study.enqueue_trial({CONFIGURATION: name}, user_attrs={"grid_index": index})
            study.set_user_attr("sweep", fingerprint(spec))
            study.set_user_attr("n_trials", spec.n_trials)
        elif made_from != fingerprint(spec):
            raise UserError(
                f"the study {spec.name!r} in this storage was made from a different sweep file (its grid, search, "
                "seeds, configs or metric changed); give the sweep another 'name', or delete the study "
                f"(the sweep folder's optuna.journal) to start over"
            )
        if sampler_seed is not None:
            # Seeded by the worker and by how far the study has come, so that a study continued after a
            # stop does not draw its first samples again (a sampler seeded alike repeats its draws).
            study.sampler = make_sampler(spec.sampler, sampler_seed + 1009 * len(study.trials))
    return study


def process_alive(worker: str | None) -> bool:
    """Whether the ``host:pid`` that runs a trial still runs (another host's counts as alive: its heartbeat tells).

    Every worker names itself on its trial before it releases the study lock, so under the lock a
    running trial without a worker is one whose worker died while making it.
    """
    if not worker or ":" not in worker:
        return False
    host, pid = worker.rsplit(":", 1)
    if host != HOST:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def counts_as_tried(trial: FrozenTrial) -> bool:
    """Trials that used up one of ``n_trials``: finished, pruned, running, or failed on their own."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def recover_interrupted(study: optuna.Study, storage: BaseStorage) -> None:
    """Fail the trials whose worker is gone, and enqueue again every trial that was stopped (call under the lock)."""
    if isinstance(storage, RDBStorage):
        optuna.storages.fail_stale_trials(study)  # heartbeats: trials of workers lost on any machine
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == TrialState.RUNNING and not process_alive(trial.user_attrs.get("worker")):
            study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get("retry_of") for trial in trials}
    for trial in trials:
        stopped = trial.state == TrialState.FAIL and "error" not in trial.user_attrs
        if stopped and trial.number not in retried:
            attrs = {key: value for key, value in trial.user_attrs.items() if key == "grid_index"}
            study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": trial.number})


def has_work(study: optuna.Study, spec: SweepSpec) -> bool:
    """Whether a worker should start another trial: one is waiting, or a search has configurations left to try."""
    trials = study.get_trials(deepcopy=False)
    if any(trial.state == TrialState.WAITING for trial in trials):
        return True
    return spec.sampler != "grid" and sum(counts_as_tried(trial) for trial in trials) < spec.n_trials


def is_finished(study: optuna.Study, spec: SweepSpec) -> bool:
    trials = study.get_trials(deepcopy=False)
    if any(trial.state in (TrialState.WAITING, TrialState.RUNNING) for trial in trials):
        return False
    tried = sum(counts_as_tried(trial) for trial in trials)
    return tried >= (len(spec.configurations) if spec.sampler == "grid" else spec.n_trials)


def worker_id() -> str:
    return f"{HOST}:{os.getpid()}"


def results_dir(log_root: Path, spec: SweepSpec) -> Path:
    return log_root / spec.name
