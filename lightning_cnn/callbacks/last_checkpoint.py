"""``last.ckpt`` kept current at every epoch end and when SIGINT or SIGTERM stops ``fit``, with the random
generators' state, so ``fit --ckpt_path last`` continues exactly where training stopped."""

from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

RNG_STATES_KEY = "rng_states"


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
