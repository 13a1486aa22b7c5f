"""MAE reconstruction loss (He et al. 2021, Sec. 3 "Reconstruction target")."""

from __future__ import annotations

import torch


def patch_targets(patches: torch.Tensor, norm_pix_loss: bool) -> torch.Tensor:
    """Per-patch targets (N, L, P) -> (N, L, P), normalised by each patch's mean and std.

    The std is the unbiased one plus 1e-6 inside the root, exactly as the official code
    (``target.var(dim=-1, keepdim=True)``), so published checkpoints see the target they saw.
    """
    if not norm_pix_loss:
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + 1.0e-6) ** 0.5


def mae_loss(pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool = True) -> torch.Tensor:
    """Mean squared error over removed patches only.

    pred, patches: (N, L, P) predictions and pixel patches; mask: (N, L), 1 = removed.
    Returns a scalar: per-patch MSE averaged over the removed patches of the whole batch.
    Computed in float32 whatever the autocast dtype of ``pred``.
    """
    target = patch_targets(patches.float(), norm_pix_loss)
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum()
