"""SimMIM reconstruction loss (Xie et al. 2022, arXiv 2111.09886, Sec. 3.3 and official ``models/simmim.py``)."""

from __future__ import annotations

import torch


def simmim_loss(imgs: torch.Tensor, rec: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """L1 on the masked pixels: ``sum(|x - x_rec| * m) / (sum(m) + 1e-5) / C``.

    ``imgs``, ``rec``: (N, C, H, W), the normalised input images and their prediction; ``pixel_mask``:
    (N, 1, H, W), 1 where the pixel was masked. The mask counts each pixel once and the division by
    C turns the channel sum into a mean, as the official code. Computed in float32 (or float64).
    """
    dtype = torch.promote_types(rec.dtype, torch.float32)  # at least float32 under autocast
    m = pixel_mask.to(dtype)
    return (torch.abs(imgs.to(dtype) - rec.to(dtype)) * m).sum() / (m.sum() + 1e-5) / imgs.shape[1]
