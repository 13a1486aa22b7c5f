"""Fixed 2-D sine-cosine position embeddings (MAE, He et al. 2021, Sec. 3 "Implementation").

Bit-for-bit the construction of the official MAE code (``util/pos_embed.py``): half of the
channels encode the row, half the column, each as ``[sin(pos * w_k), cos(pos * w_k)]`` with
``w_k = 1 / 10000 ** (2k / d)``, computed in float64 and cast to float32.
"""

from __future__ import annotations

import torch


def sincos_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, embed_dim) embedding; ``embed_dim`` must be even."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.to(torch.float64).reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(embed_dim: int, grid_size: int | tuple[int, int], cls_token: bool = False) -> torch.Tensor:
    """Return (gh*gw [+1], embed_dim) float32 embeddings, row-major over the patch grid.

    With ``cls_token`` a zero row is prepended for the class token, as in the official code.
    """
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    # The official code meshes (w, h) so that grid[0] varies along the width.
    grid_w, grid_h = torch.meshgrid(
        torch.arange(gw, dtype=torch.float64), torch.arange(gh, dtype=torch.float64), indexing="xy"
    )
    emb_h = sincos_1d(embed_dim // 2, grid_w)  # official: first half from grid[0]
    emb_w = sincos_1d(embed_dim // 2, grid_h)
    emb = torch.cat([emb_h, emb_w], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), emb], dim=0)
    return emb.float()
