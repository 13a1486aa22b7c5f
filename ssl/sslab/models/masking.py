"""Per-sample random masking (MAE, He et al. 2021, Sec. 3 "Masking"; official ``random_masking``)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Masking(NamedTuple):
    """Result of :func:`random_masking`.

    ``ids_keep`` (N, K) indices of the kept tokens; ``mask`` (N, L) with 1 for a removed token,
    in the original order; ``ids_restore`` (N, L) the inverse permutation of the shuffle.
    """

    ids_keep: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """Number of visible tokens, ``int(L * (1 - mask_ratio))`` as in the official code."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(num_tokens * (1 - mask_ratio))


def random_masking(
    batch: int,
    num_tokens: int,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> Masking:
    """Shuffle each sample's tokens by ``argsort(noise)`` and keep the first ``num_kept``.

    ``noise`` (N, L) makes the mask deterministic; by default it is ``torch.rand``. Small noise
    is kept, large noise removed.
    """
    if noise is None:
        noise = torch.rand(batch, num_tokens, device=device)
    elif noise.shape != (batch, num_tokens):
        raise ValueError(f"noise must have shape {(batch, num_tokens)}, got {tuple(noise.shape)}")
    keep = num_kept(num_tokens, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_tokens, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_shuffle[:, :keep], mask, ids_restore)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N, L, D) tokens, (N, K) indices -> (N, K, D) selected tokens."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
