"""Per-sample random streams keyed by (seed, epoch, sample index).

Every random choice that belongs to one sample (its crop, its flip, its MAE mask) is drawn from a
generator seeded by these keys, not from a process-global stream. So a sample is augmented and
masked identically whatever the number of processes, data-loader workers or the point a run was
resumed from: 2 processes x batch B reproduce 1 process x batch 2B, and a resumed run replays the
uninterrupted one.
"""

from __future__ import annotations

import hashlib

import torch

STREAMS = {"augment": 0, "mask": 1, "drop_path": 2}  # drop_path: keyed by a micro-batch's first sample


def sample_seed(seed: int, epoch: int, index: int, stream: str = "augment") -> int:
    """A 63-bit seed for one sample's random stream."""
    key = f"{seed}/{epoch}/{index}/{STREAMS[stream]}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def sample_uniform(seed: int, epoch: int, indices: torch.Tensor, size: int, stream: str = "mask") -> torch.Tensor:
    """(B,) sample indices -> (B, size) uniform noise, one independent row per sample."""
    rows = []
    for i in indices.tolist():
        g = torch.Generator().manual_seed(sample_seed(seed, epoch, i, stream))
        rows.append(torch.rand(size, generator=g))
    return torch.stack(rows)
