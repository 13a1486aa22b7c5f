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
          skip: Iterable[str] = (), fused: bool = True) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (MAE: betas (0.9, 0.95), wd 0.05).

    ``fused`` (default) runs torch's fused kernel (CPU and CUDA): one pass over each parameter and
    its moments instead of torch's default of about ten elementwise passes, same update up to
    rounding (tests/test_speed.py); ``fused=False`` is torch's default implementation.
    """
    return torch.optim.AdamW(param_groups(model, weight_decay, skip), lr=lr, betas=betas, fused=fused or None)


@torch.no_grad()
def clip_per_param(params: Iterable[torch.Tensor], max_norm: float) -> None:
    """Scale each gradient tensor to norm <= ``max_norm`` separately (DINO's ``utils.clip_gradients``).

    ``grad *= min(1, max_norm / (||grad|| + 1e-6))`` on all tensors at once: no per-tensor
    ``if coef < 1`` test, which would wait for the device once per parameter.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    coefs = [(max_norm / (n + 1e-6)).clamp_(max=1.0) for n in torch._foreach_norm(grads)]
    torch._foreach_mul_(grads, coefs)
