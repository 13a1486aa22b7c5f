"""Batch sampler that shards one global, seeded permutation over processes and can resume."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from ..errors import SslabError


class ShardedBatchSampler:
    """Yields batches of ``(epoch, index)`` pairs for one process.

    Epoch ``e`` uses the permutation ``randperm(n, seed + e)``; global batch ``b`` is
    ``perm[b*G:(b+1)*G]`` with ``G = batch_size * world_size``, and process ``r`` takes the
    ``r``-th slice of ``batch_size`` from it. The union of the processes' batches therefore equals
    the batch a single process with ``batch_size * world_size`` would see. Incomplete last global
    batches are dropped (as the official MAE/DINO loaders do) so every step has the same size.
    """

    def __init__(self, num_samples: int, batch_size: int, world_size: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True):
        global_batch = batch_size * world_size
        if num_samples < global_batch:
            raise SslabError(
                f"the dataset has {num_samples} images, fewer than one global batch of {global_batch} "
                f"(batch_size {batch_size} x {world_size} processes); "
                + ("lower --batch-size" if batch_size > 1 else
                   f"use at least {global_batch} images or start {max(1, num_samples)} process(es) or fewer")
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.world_size, self.rank, self.seed, self.shuffle = world_size, rank, seed, shuffle
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_batch`` batches (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            perm = list(range(self.num_samples))
        G, B = self.batch_size * self.world_size, self.batch_size
        for b in range(self.start_batch, len(self)):
            start = b * G + self.rank * B
            yield [(self.epoch, i) for i in perm[start:start + B]]
