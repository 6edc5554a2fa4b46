"""Batches gathered by index from tensors held in memory: the fast path, sharded across processes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor


class TensorBatchLoader:
    """Yields ``(images, labels)`` batches gathered by index from tensors held in memory.

    Under distributed training every rank takes a disjoint shard of each epoch's order; all ranks
    yield the same number of batches so that collective operations stay in step. With
    ``shuffle=True`` the order of epoch ``e`` is a permutation drawn from the pair ``(seed, e)``,
    identical on every rank and shared with no other pair; Lightning calls :meth:`set_epoch`
    (through ``.sampler``) before each epoch.

    ``resume_batches``, when given, is asked at the start of every iteration how many batches of the
    current epoch were already trained on (non-zero only when fit resumes inside an epoch); those
    are skipped. It is asked then, not when the loader is built, because Lightning may build the
    loader before it restores the checkpoint (``trainer.estimated_stepping_batches`` does).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        resume_batches: Callable[[], int] | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resume_batches = resume_batches
        # Lightning calls ``sampler.set_epoch`` on any iterable that has one, and inspects ``batch_sampler``.
        self.sampler, self.batch_sampler = self, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        # Lightning saves this in checkpoints and treats the loader as resumable. The position inside
        # the epoch is Lightning's own batch progress (see MNISTDataModule.train_dataloader), since
        # the loader cannot tell the batches trained on from the one Lightning has prefetched.
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]

    def _num_batches(self) -> int:
        largest_shard = math.ceil(len(self.labels) / self.world_size)
        return math.ceil(largest_shard / self.batch_size)

    def __len__(self) -> int:
        return self._num_batches()

    def shard_indices(self) -> Tensor:
        """The indices this rank visits in the current epoch, in order."""
        n = len(self.labels)
        if self.shuffle:
            # Hashed through a SeedSequence: with seed + epoch, run s would replay run s+1's orders one epoch late.
            pair_seed = int(np.random.SeedSequence((self.seed, self.epoch)).generate_state(1, np.uint64)[0])
            generator = torch.Generator().manual_seed(pair_seed)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        shard = self.shard_indices().to(self.images.device)
        batches = shard.split(self.batch_size)
        if len(batches) < self._num_batches():
            # A shard one sample short of its neighbours' could end a batch early; split it into
            # as many (slightly smaller) batches as the other ranks yield instead.
            batches = shard.tensor_split(self._num_batches())
        # Read here, at the first batch of the epoch, when Lightning has restored its progress.
        start = self.resume_batches() if self.resume_batches is not None else 0
        for index in batches[start if 0 < start < len(batches) else 0 :]:
            # index_select gathers the same rows as images[index], about five times faster on a CPU.
            yield self.images.index_select(0, index), self.labels.index_select(0, index)
