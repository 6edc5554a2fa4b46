"""CallbackGroup: one callback for Lightning, forwarding each hook to the members that implement it, in order."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from lightning_cnn.callbacks.group import CallbackGroup


class Recorder(Callback):
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.calls.append((self.name, batch_idx))


class EpochOnly(Callback):
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.calls.append(("epoch", None))


def test_each_hook_reaches_only_the_members_that_implement_it_in_their_order():
    calls: list = []
    group = CallbackGroup([Recorder("a", calls), EpochOnly(calls), Recorder("b", calls)])
    group.on_train_batch_end(None, None, None, None, 7)
    group.on_train_epoch_end(None, None)
    assert calls == [("a", 7), ("b", 7), ("epoch", None)]
    # A hook no member implements stays Lightning's own no-op (no forwarding per step).
    assert "on_before_backward" not in vars(group) and "on_train_batch_end" in vars(group)
