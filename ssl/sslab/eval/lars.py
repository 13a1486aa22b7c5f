"""LARS (You et al. 2017) as used by the MAE linear probe: the official MAE ``util/lars.py``.

For every parameter with more than one dimension the update ``g + wd * w`` is rescaled by the trust
ratio ``eta * ||w|| / ||g + wd * w||`` (1 when either norm is 0); biases and norm parameters
are neither decayed nor rescaled. Then heavy-ball momentum: ``mu = m * mu + update``,
``w -= lr * mu``.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    """LARS with momentum; ``trust_coefficient`` is eta (MAE: 0.001)."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        """One LARS update of every parameter that has a gradient."""
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:  # not a bias or norm parameter
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.0,
                                    torch.where(update_norm > 0, g["trust_coefficient"] * param_norm / update_norm,
                                                one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss
