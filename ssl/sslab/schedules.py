"""Per-iteration schedules (learning rate, weight decay, EMA momentum), as 1-D tensors indexed by step."""

from __future__ import annotations

import math

import torch


def warmup_cosine(base: float, final: float, epochs: float, steps_per_epoch: int, warmup_epochs: float = 0.0,
                  start: float = 0.0) -> torch.Tensor:
    """Linear warmup from ``start`` to ``base`` over ``warmup_epochs``, then half-cosine to ``final``.

    Evaluated at the fractional epoch ``step / steps_per_epoch`` of every optimiser step, which is
    the official MAE ``adjust_learning_rate`` (``util/lr_sched.py``). Returns (epochs*steps_per_epoch,).
    """
    total = int(round(epochs * steps_per_epoch))
    t = torch.arange(total, dtype=torch.float64) / steps_per_epoch
    out = torch.empty(total, dtype=torch.float64)
    warm = t < warmup_epochs
    out[warm] = start + (base - start) * t[warm] / max(warmup_epochs, 1e-12)
    span = max(epochs - warmup_epochs, 1e-12)
    progress = (t[~warm] - warmup_epochs) / span
    out[~warm] = final + (base - final) * 0.5 * (1.0 + torch.cos(math.pi * progress))
    return out


def constant(value: float, total_steps: int) -> torch.Tensor:
    """A flat schedule."""
    return torch.full((total_steps,), float(value), dtype=torch.float64)
