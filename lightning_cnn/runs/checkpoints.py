"""Which run a command belongs to: a new run folder claimed for it, or the run of ``--ckpt_path best|last|<file>``."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lightning_cnn.checkpoints import load_checkpoint
from lightning_cnn.errors import UserError
from lightning_cnn.runs.folders import (
    claim_run_folder,
    run_folder_name,
    run_versions,
    version_number,
)

RUN_ALIASES = ("best", "last")


def _tensorboard_root(config: Namespace) -> tuple[Namespace, Path] | None:
    logger = config.trainer.get("logger")
    if not isinstance(logger, Namespace) or not str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
        return None
    init_args = logger.init_args
    return init_args, Path(init_args.save_dir) / (init_args.get("name") or "")


def claim_new_run(config: Namespace) -> Path | None:
    """Claim a new run folder for a TensorBoard-logged command and pin the logger to it; returns the folder.

    Nothing is claimed when the config names a run already (``version``, or a checkpoint of one), when
    another logger is used, or on processes other than global rank zero (they log nothing; Lightning
    broadcasts rank zero's folder to them).
    """
    logger = _tensorboard_root(config)
    if logger is None or rank_zero_only.rank > 0:
        return None
    logger_args, experiment_dir = logger
    if logger_args.get("version") is not None:
        return None
    logger_args.version = claim_run_folder(experiment_dir)
    return experiment_dir / run_folder_name(logger_args.version)


def resolve_run_checkpoint(config: Namespace) -> None:
    """Resolve ``ckpt_path`` to a file and log into the run it belongs to.

    ``best``/``last`` name the newest run of the experiment that has a ``last.ckpt`` (or the run set
    by ``trainer.logger.init_args.version``); a file inside a run's ``checkpoints/`` folder of the
    same experiment also logs into that run, so test results land beside the training curves.
    """
    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None:
        return
    logger = _tensorboard_root(config)
    if ckpt_path not in RUN_ALIASES:
        if not Path(ckpt_path).is_file():
            raise UserError(f"checkpoint {ckpt_path} does not exist; pass an existing .ckpt file, 'best' or 'last'")
        run = Path(ckpt_path).resolve().parent.parent
        if logger is not None and run.parent == logger[1].resolve() and version_number(run) >= 0:
            logger[0].version = run.name
        return
    if logger is None:
        return  # another logger: leave 'best'/'last' to Lightning's own lookup
    logger_args, experiment_dir = logger
    if logger_args.get("version") is not None:
        runs = [experiment_dir / run_folder_name(logger_args.version)]
    else:
        runs = run_versions(experiment_dir)
    run = next((run for run in runs if (run / "checkpoints" / "last.ckpt").is_file()), None)
    if run is None:
        raise UserError(
            f"--ckpt_path {ckpt_path}: no run under {experiment_dir} has a checkpoints/last.ckpt; "
            "train one with 'fit' using the same --config, or pass the path of a .ckpt file"
        )
    last = run / "checkpoints" / "last.ckpt"
    config.ckpt_path = str(last if ckpt_path == "last" else best_checkpoint(last))
    logger_args.version = run.name


def tracked_best(last: Path) -> list[dict]:
    """The states of the ModelCheckpoints that tracked a best checkpoint in the run of ``last`` (none for a
    run trained without validation)."""
    state = load_checkpoint(last)
    return [value for key, value in state.get("callbacks", {}).items() if key.startswith("ModelCheckpoint")]


def best_checkpoint(last: Path) -> Path:
    """The best checkpoint recorded by ModelCheckpoint in the state of ``last``."""
    tracked = tracked_best(last)
    if not tracked:
        raise UserError(
            f"the run of {last} kept no best checkpoint (it was trained without validation, data.val_split=0); "
            "use --ckpt_path last"
        )
    for callback_state in tracked:
        if callback_state.get("best_model_path"):
            # Only inside this run's own folder: the recorded path may be relative to another working
            # directory, or name a file of another run (the folder may also have moved since).
            candidate = last.parent / Path(callback_state["best_model_path"]).name
            if candidate.is_file():
                return candidate
    raise UserError(
        f"{last} records a best checkpoint that is no longer in {last.parent}; use --ckpt_path last or a file path"
    )
