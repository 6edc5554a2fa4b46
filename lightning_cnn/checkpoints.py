"""Checkpoints that can be trusted: safe loading with clear errors, and a last checkpoint that survives interruption.

``load_checkpoint`` reads a file with weights-only unpickling (no code from the file runs) and
checks it against the model it is meant for. ``LastCheckpoint`` keeps ``last.ckpt`` current at
every epoch end and when SIGINT or SIGTERM stops ``fit``, with the random number generators'
state, so ``fit --ckpt_path last`` continues exactly where training stopped.
"""

from __future__ import annotations

import pickle
import random
import signal
import sys
import threading
import zipfile
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from lightning_cnn.errors import UserError

RNG_STATES_KEY = "rng_states"


class CheckpointError(UserError):
    """A checkpoint file is missing, damaged, not a checkpoint, or belongs to another architecture."""


# Pickle instructions that name a Python global or call one: what code or objects in a pickle need.
_OBJECT_OPCODES = frozenset(
    ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2", "EXT4")
)


def _pickle_names_objects(path: Path) -> bool:
    """Whether the pickle in ``path`` (a torch zip file's ``data.pkl``, or the file itself) imports or calls anything.

    The instructions are only parsed (``pickletools.genops``), never executed; parsing stops at the
    first one that is not valid pickle, so a text or random file reads as naming nothing.
    """
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if name.endswith("data.pkl")]
                if not names:
                    return False
                with archive.open(names[0]) as stream:
                    return any(opcode.name in _OBJECT_OPCODES for opcode, _, _ in pickletools.genops(stream))
        with open(path, "rb") as stream:
            return any(opcode.name in _OBJECT_OPCODES for opcode, _, _ in pickletools.genops(stream))
    except Exception:  # not pickle (or not readable) from the start: it names nothing
        return False


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint with weights-only unpickling.

    Torch's own message for a refused file advises loading it with ``weights_only=False``, which runs
    whatever the file holds; it is never shown. A refused file is named as holding code or objects
    (nothing of it ran), or as not a checkpoint when it is not a pickle at all.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, or holds code or Python
            objects that weights-only loading refuses to build.
    """
    import warnings

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an existing .ckpt file, 'best' or 'last'")
    try:
        with warnings.catch_warnings():
            # Torch's note on a plain pickle's protocol, printed before it refuses the file: noise here.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error) or _pickle_names_objects(path):
            raise CheckpointError(
                f"{path} holds code or Python objects that a checkpoint should not hold, so it was not loaded "
                "(safe loading refused it and nothing in it ran); pass a .ckpt file written by fit (only a file "
                "from a source you trust should ever be loaded any other way)"
            ) from None
        raise CheckpointError(
            f"{path} is not a checkpoint (it is not a file that torch.save writes), so it was not loaded; "
            "pass a .ckpt file written by fit"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, KeyError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "weights_only" in reason:  # never pass on torch's advice to load without weights-only safety
            reason = type(error).__name__
        raise CheckpointError(
            f"{path} is truncated or not a checkpoint ({reason}); pass a complete .ckpt file written by fit "
            "(a run stopped while saving keeps its previous checkpoints)"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (it has no state_dict); pass a .ckpt file written by fit"
        )
    return checkpoint


def rename_positional_keys(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """``state_dict`` with positional names of ``nn.Sequential`` children (``backbone.0.weight``) renamed to
    ``model``'s names for the same positions (``backbone.conv1.weight``).

    The zoo once built its networks as anonymous sequences; their checkpoints still load. Keys that
    do not lead through ``model`` this way are left as they are (the architecture check names them).
    """
    renamed = {}
    for key, value in state_dict.items():
        module, parts = model, key.split(".")
        for index, part in enumerate(parts[:-1]):
            children = dict(module.named_children())
            if part not in children and part.isdigit() and isinstance(module, nn.Sequential):
                names = list(children)
                if int(part) >= len(names):
                    break
                parts[index] = part = names[int(part)]
            if part not in children:
                break
            module = children[part]
        renamed[".".join(parts)] = value
    return renamed


def check_architecture(checkpoint: dict[str, Any], model: nn.Module, path: str | Path) -> None:
    """Raise a CheckpointError unless the checkpoint's weights fit ``model`` name for name and shape for shape."""
    saved = checkpoint["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = sorted(k for k in set(saved) & set(expected) if tuple(saved[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or mismatched):
        return
    saved_backbone = checkpoint.get("hyper_parameters", {}).get("backbone")
    trained_with = ""
    if isinstance(saved_backbone, dict) and "class_path" in saved_backbone:
        trained_with = f" (it was trained with {saved_backbone['class_path']} {saved_backbone.get('init_args', {})})"
    details = []
    if mismatched:
        key = mismatched[0]
        details.append(f"{key} has shape {tuple(saved[key].shape)}, the model expects {tuple(expected[key].shape)}")
    if missing:
        details.append(f"{len(missing)} weights missing, e.g. {missing[0]}")
    if unexpected:
        details.append(f"{len(unexpected)} unknown weights, e.g. {unexpected[0]}")
    raise CheckpointError(
        f"{path} belongs to another architecture{trained_with}: {'; '.join(details)}; "
        "pass the --config (and model options) it was trained with"
    )


def validate_checkpoint(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load ``path`` safely and check that it fits ``model``; returns the checkpoint."""
    checkpoint = load_checkpoint(path)
    checkpoint["state_dict"] = rename_positional_keys(checkpoint["state_dict"], model)
    check_architecture(checkpoint, model, path)
    return checkpoint


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class LastCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` at the end of every epoch, and when SIGINT or SIGTERM stops ``fit``.

    Lightning (since 2.6) refreshes a ModelCheckpoint's ``save_last`` file only when a top-k file is
    saved in the same step, so ``last.ckpt`` could lag behind by many epochs; this callback writes it
    unconditionally. SIGTERM takes Lightning's own path (stop after the current batch); the first
    Ctrl+C (SIGINT) is turned into the same request, so the checkpoint holds a whole optimizer step.
    A second Ctrl+C stops validation at once; during training the stop is at most one step away and
    it waits for it, so that the checkpoint still holds whole steps (a third aborts at once). Once
    the stop is under way, further Ctrl+C are ignored: a checkpoint being written is never cut off.
    The checkpoint carries the random number generators' state, so resuming gives the same dropout
    masks and augmentations as an uninterrupted run.

    Args:
        every_n_train_steps: also write ``last.ckpt`` every this many optimizer steps (None: at epoch ends only).
    """

    # Which signal stopped the last fit in this process, for the exit status (None: none did).
    stopped_by: signal.Signals | None = None

    def __init__(self, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
            every_n_train_steps=every_n_train_steps,
        )
        self._previous_sigint_handler: Any = None
        self._sigint_received = False
        self._trainer: pl.Trainer | None = None

    @property
    def last_path(self) -> Path | None:
        if self.dirpath is None:
            return None
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        type(self).stopped_by = None
        self._sigint_received = False
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous_sigint_handler is not None:
            signal.signal(signal.SIGINT, self._previous_sigint_handler)
            self._previous_sigint_handler = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self._sigint_received = True
        signal.signal(signal.SIGINT, self._on_second_sigint)
        sigterm_handler = signal.getsignal(signal.SIGTERM)
        if callable(sigterm_handler):
            sigterm_handler(signal.SIGTERM, frame)  # Lightning's connector: stop after the current batch
        else:
            raise KeyboardInterrupt

    def _on_second_sigint(self, signum: int, frame: FrameType | None) -> None:
        if isinstance(sys.exc_info()[1], (SIGTERMException, KeyboardInterrupt)):
            return  # the stop is under way (its checkpoint may be being written): never cut it off
        trainer = self._trainer
        if trainer is not None and trainer.training and not (trainer.validating or trainer.sanity_checking):
            # Training: the stop comes after the current step, milliseconds away; a KeyboardInterrupt
            # now could save weights, optimizer and schedule halfway through it.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("stopping after the current step and saving last.ckpt (Ctrl+C again aborts at once)", file=sys.stderr)
            return
        raise KeyboardInterrupt  # Lightning stops at once and still calls on_exception, which saves

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return  # a crash (or a non-finite loss): keep the last good checkpoint untouched
        by_sigint = self._sigint_received or isinstance(exception, KeyboardInterrupt)
        stopped_by = signal.SIGINT if by_sigint else signal.SIGTERM
        type(self).stopped_by = stopped_by
        path = self.last_path
        if path is None or trainer.state.fn != TrainerFn.FITTING or trainer.fast_dev_run or trainer.sanity_checking:
            return
        if trainer.global_step == 0:
            return  # nothing trained yet: no checkpoint is better than one of the initial weights
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C now would cut the save off (restored at teardown)
        # The full training state; Lightning writes a temporary file and renames it, so never half-written.
        trainer.save_checkpoint(path, weights_only=False)
        rank_zero_info(
            f"{stopped_by.name}: saved {path} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
            "continue with the same command and --ckpt_path last"
        )

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # A top-level entry, not this callback's state: that is keyed by its options, and a resume
        # with other every_n_train_steps must still restore the generators.
        checkpoint[RNG_STATES_KEY] = _rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING and RNG_STATES_KEY in checkpoint:
            _set_rng_states(checkpoint[RNG_STATES_KEY])
