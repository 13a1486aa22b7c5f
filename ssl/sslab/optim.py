"""Optimiser parameter groups: weight decay on weights only (MAE Sec. A.1, official ``add_weight_decay``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, skip: Iterable[str] = ()) -> list[dict]:
    """Two AdamW groups: decayed weights, and undecayed biases / norms / tokens / position embeddings.

    A parameter is undecayed when it is 1-D (norm scales and shifts), its name ends in ``.bias``,
    or its name is in ``skip`` (e.g. ``cls_token``, ``mask_token``, ``pos_embed``). Frozen
    parameters are left out. Each group carries ``wd_scale`` (1 or 0) for weight-decay schedules.
    """
    skip = set(skip)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        bare = name.removeprefix("module.")
        if p.ndim <= 1 or bare.endswith(".bias") or bare in skip or bare.split(".")[-1] in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "wd_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "wd_scale": 0.0},
    ]


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
          skip: Iterable[str] = ()) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (MAE: betas (0.9, 0.95), wd 0.05)."""
    return torch.optim.AdamW(param_groups(model, weight_decay, skip), lr=lr, betas=betas)


@torch.no_grad()
def clip_per_param(params: Iterable[torch.Tensor], max_norm: float) -> None:
    """Scale each gradient tensor to norm <= ``max_norm`` separately (DINO's ``utils.clip_gradients``)."""
    for p in params:
        if p.grad is not None:
            norm = p.grad.norm(2)
            coef = max_norm / (norm + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)
