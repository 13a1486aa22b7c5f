"""What an encoder looks at: last-block self-attention (ViT) or pooled-feature similarity (Swin).

ViT, as DINO's ``visualize_attention.py`` (Caron et al. 2021, Fig. 1 and 3): the attention of the
class token to every patch in the last block, one map per head, plus their mean. timm's
``Attention`` uses fused SDPA and never materialises the weights, so they are recomputed here from
the input of the last block's attention (``blocks[-1].norm1`` output, captured by a hook):
``softmax(q k^T * scale)`` with timm's own ``qkv``, ``q_norm``, ``k_norm`` and ``scale``.
Optionally each map is thresholded to the smallest set of patches holding ``mass`` of its
attention (DINO: ``--threshold 0.6``).

Swin has no class token; its comparable map is the cosine similarity between the globally pooled
last-stage feature (what a linear probe sees) and each last-stage token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .grid import colorize, make_grid, resize_nearest
from ..errors import SslabError


def _vit_grid(model: nn.Module, imgs: torch.Tensor) -> tuple[int, int]:
    pe = model.patch_embed
    if getattr(model, "dynamic_img_size", False) and hasattr(pe, "dynamic_feat_size"):
        return tuple(pe.dynamic_feat_size(tuple(imgs.shape[-2:])))  # type: ignore[return-value]
    return tuple(pe.grid_size)  # type: ignore[return-value]


@torch.no_grad()
def vit_cls_attention(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """Last-block attention of the class token to the patches: (N, C, H, W) -> (N, heads, h, w).

    Each head's map sums to 1 over the patches plus the prefix tokens (so <= 1 over patches).
    """
    blocks = getattr(model, "blocks", None)
    attn = getattr(blocks[-1], "attn", None) if blocks is not None and len(blocks) else None
    if attn is None or not all(hasattr(attn, a) for a in ("qkv", "num_heads", "head_dim", "scale")) \
            or not hasattr(blocks[-1], "norm1"):
        raise TypeError(f"{type(model).__name__} is not a timm ViT with standard attention blocks "
                        "(blocks[-1].norm1 -> blocks[-1].attn.qkv); use similarity_map for other encoders")
    if getattr(model, "cls_token", None) is None:
        raise TypeError(f"{type(model).__name__} has no class token; use similarity_map instead")
    captured: dict[str, torch.Tensor] = {}
    hook = blocks[-1].norm1.register_forward_hook(lambda mod, inp, out: captured.__setitem__("x", out))
    was_training = model.training
    model.eval()
    try:
        model.forward_features(imgs)
    finally:
        hook.remove()
        model.train(was_training)
    x = captured["x"]
    n, t, _ = x.shape
    qkv = attn.qkv(x).reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = ((q.float() * attn.scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)  # (N, heads, T, T)
    prefix = getattr(model, "num_prefix_tokens", 1)
    gh, gw = _vit_grid(model, imgs)
    cls = weights[:, :, 0, prefix:]
    if cls.shape[-1] != gh * gw:
        raise ValueError(f"{cls.shape[-1]} patch tokens do not fill the {gh}x{gw} patch grid")
    return cls.reshape(n, attn.num_heads, gh, gw)


@torch.no_grad()
def similarity_map(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the mean-pooled last-stage feature to each last-stage token:
    (N, C, H, W) -> (N, 1, h, w) in [-1, 1]. For Swin (timm output ``NHWC``) and NCHW feature maps."""
    was_training = model.training
    model.eval()
    try:
        feats = model.forward_features(imgs)
    finally:
        model.train(was_training)
    if feats.ndim != 4:
        raise TypeError(f"{type(model).__name__}.forward_features gives {tuple(feats.shape)}, not a 2-D feature map")
    if getattr(model, "output_fmt", "NCHW") != "NHWC":
        feats = feats.permute(0, 2, 3, 1)
    feats = feats.float()
    pooled = feats.mean(dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
    return F.cosine_similarity(feats, pooled, dim=-1)[:, None]


def attention_maps(model: nn.Module, imgs: torch.Tensor) -> tuple[torch.Tensor, str]:
    """(maps (N, K, h, w), kind): ViT class-token attention per head, else the similarity map (K = 1)."""
    if getattr(model, "cls_token", None) is not None and hasattr(model, "blocks"):
        return vit_cls_attention(model, imgs), "attention"
    return similarity_map(model, imgs), "similarity"


def threshold_top_mass(maps: torch.Tensor, mass: float) -> torch.Tensor:
    """Boolean mask of the smallest set of patches holding ``mass`` of each map (DINO
    ``visualize_attention.py``): (..., h, w) -> (..., h, w). Maps are renormalised to sum 1 first."""
    if not 0.0 < mass <= 1.0:
        raise SslabError(f"threshold mass must be in (0, 1], got {mass}")
    flat = maps.flatten(-2).float().clamp_min(0)
    val, idx = torch.sort(flat, dim=-1)
    val = val / val.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    keep_sorted = torch.cumsum(val, dim=-1) > (1 - mass)
    keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
    return keep.reshape(maps.shape)


def attention_grid(model: nn.Module, imgs: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   threshold: float | None = None, **grid_kwargs: Any) -> Image.Image:
    """One row per image: the image, the mean map, then one map per head (ViT) or the similarity map.

    With ``threshold`` each map is shown as the image with the patches outside its top-``threshold``
    attention mass darkened.
    """
    maps, kind = attention_maps(model, imgs)
    if kind == "attention":
        maps = torch.cat([maps.mean(dim=1, keepdim=True), maps], dim=1)
        titles = ["image", "mean"] + [f"head {h}" for h in range(maps.shape[1] - 1)]
    else:
        titles = ["image", "similarity"]
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    pixels = (imgs.detach().float().cpu() * s + m).clamp(0, 1)
    size = tuple(imgs.shape[-2:])
    keep = threshold_top_mass(maps, threshold) if threshold is not None else None
    rows = []
    for i in range(imgs.shape[0]):
        row = [pixels[i]]
        for j in range(maps.shape[1]):
            if keep is None:
                row.append(resize_nearest(colorize(maps[i, j]), size))
            else:
                inside = resize_nearest(keep[i, j][None].float().cpu(), size)
                row.append(pixels[i] * (0.2 + 0.8 * inside))
        rows.append(row)
    return make_grid(rows, titles, **grid_kwargs)
