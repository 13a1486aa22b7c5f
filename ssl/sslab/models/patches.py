"""Images <-> rows of patch pixels, in the pixel order of the official MAE code."""

from __future__ import annotations

import torch
from einops import rearrange


def patchify(imgs: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, p*q*C), patches row-major, pixels in (p, q, c) order (official ``patchify``)."""
    p, q = patch_size
    return rearrange(imgs, "n c (h p) (w q) -> n (h w) (p q c)", p=p, q=q)


def unpatchify(x: torch.Tensor, patch_size: tuple[int, int], grid_size: tuple[int, int]) -> torch.Tensor:
    """(N, L, p*q*C) -> (N, C, H, W), the inverse of :func:`patchify`."""
    p, q = patch_size
    h, w = grid_size
    return rearrange(x, "n (h w) (p q c) -> n c (h p) (w q)", h=h, w=w, p=p, q=q)
