"""Several callbacks that Lightning sees as one, so that a hook none of them uses costs nothing per step.

Lightning calls every hook of every callback at every step, used or not, each inside a profiler
context: about 10 us per callback per training step (benchmarks/attribution.py), a percent or more
of a small network's step on a CPU. The dashboard's dozen callbacks, one job each, run as one group
that forwards each hook only to the members that implement it, in their order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback

# Every per-stage hook of a callback (checkpoint state stays with the members' own callbacks: these have none).
HOOKS = tuple(name for name in dir(Callback) if name.startswith("on_") or name in ("setup", "teardown"))
HOOKS = tuple(name for name in HOOKS if name not in ("on_save_checkpoint", "on_load_checkpoint"))


def _forward(methods: list[Callable[..., None]]) -> Callable[..., None]:
    def forward(*args: Any, **kwargs: Any) -> None:  # noqa: ANN401 (each hook's own arguments)
        for method in methods:
            method(*args, **kwargs)

    return forward


class CallbackGroup(Callback):
    """The ``members``, called in order for the hooks each of them implements (and for no other)."""

    def __init__(self, members: Sequence[Callback]) -> None:
        self.members = list(members)
        for hook in HOOKS:
            base = getattr(Callback, hook)
            used = [getattr(member, hook) for member in self.members if getattr(type(member), hook) is not base]
            if used:
                setattr(self, hook, _forward(used))
