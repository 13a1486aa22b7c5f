"""The DINO projection head (Caron et al. 2021, Sec. 3.1 and App. A; official ``vision_transformer.DINOHead``).

embedding (B, in_dim) -> 3-layer MLP (hidden 2048, GELU) -> bottleneck (B, 256) -> L2 normalise ->
weight-normalised linear -> (B, out_dim) logits. State-dict keys are the official ones
(``mlp.0.weight`` ... ``last_layer.weight_g``, ``last_layer.weight_v``), so official heads load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormLinear(nn.Module):
    """Bias-free linear layer ``W = g * v / ||v||`` with one norm per output row (``weight_norm(dim=0)``).

    Written out rather than taken from ``torch.nn.utils.weight_norm`` (deprecated) or the
    parametrisation API (other key names) so that the parameters are exactly the official
    ``weight_g`` (out, 1) and ``weight_v`` (out, in) and the gradient is the same.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        v = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # nn.Linear's default init, as the official layer gets
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))  # official: weight_g.data.fill_(1)

    @property
    def weight(self) -> torch.Tensor:
        """The effective (out, in) weight."""
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """MLP + L2 norm + weight-normalised prototype layer; (B, in_dim) -> (B, out_dim).

    ``norm_last_layer=True`` freezes ``weight_g`` at 1, i.e. the prototypes stay unit vectors and the
    output logits are cosine similarities (official default; more stable, slightly worse for ViT-S).
    """

    def __init__(self, in_dim: int, out_dim: int, use_bn: bool = False, norm_last_layer: bool = True,
                 nlayers: int = 3, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)
