"""The official DINO ViT's two differences from timm's: position interpolation and class-token init.

Caron et al. 2021, official ``vision_transformer.py`` (facebookresearch/dino). The timm ViT that a
DINO run trains has the official ViT's keys and layers; two things differ, and both change what a
run computes:

* **Crops of another size** (the 96 px local crops): the official ``interpolate_pos_encoding``
  resizes the (sqrt N x sqrt N) patch position grid to (h0, w0) with bicubic interpolation at
  ``scale_factor = ((h0 + 0.1) / sqrt N, (w0 + 0.1) / sqrt N)`` (the 0.1 avoids a floor error in
  the output size, official issue #8) and no antialiasing. With a scale factor given, the sampling
  grid follows that factor (src = (dst + 0.5) / scale - 0.5), not ``size / sqrt N``; timm's
  ``dynamic_img_size`` resizes to ``size`` with antialiasing. The class position is kept as is.
* **Initialisation**: the official class token is ``trunc_normal_(std=0.02)``; timm draws it from
  N(0, 1e-6). Every other tensor has the same init in both (position embedding trunc-normal 0.02,
  linear layers trunc-normal 0.02 with zero bias, LayerNorm 1 / 0, the patch convolution PyTorch's
  default).
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer

from ..errors import SslabError

POS_INTERPOLATIONS = ("dino", "timm")


def interpolate_pos_encoding(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Official DINO ``interpolate_pos_encoding``: (1, 1 + N, D) -> (1, 1 + h0 * w0, D).

    ``pos_embed`` holds the class position first, then a square sqrt(N) x sqrt(N) grid in row-major
    order; ``grid`` = (h0, w0) is the token grid of the crop. Returned unchanged when the grid is the
    trained square one (as the official ``npatch == N and w == h``).
    """
    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    h0, w0 = grid
    if h0 * w0 == n and h0 == w0:
        return pos_embed
    if side * side != n:
        raise SslabError(f"position embedding of {n} patches is not a square grid; DINO's interpolation "
                         "needs one: pass --pos-interpolation timm")
    dim = pos_embed.shape[-1]
    patch = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((h0 + 0.1) / math.sqrt(n), (w0 + 0.1) / math.sqrt(n)),
                          mode="bicubic", align_corners=False)
    if tuple(patch.shape[-2:]) != (h0, w0):  # the official assert
        raise RuntimeError(f"interpolated grid {tuple(patch.shape[-2:])} != crop grid {(h0, w0)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, h0 * w0, dim)
    return torch.cat((pos_embed[:, :1], patch), dim=1)


def _dino_pos_embed(self: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """timm's ``VisionTransformer._pos_embed`` with DINO's interpolation: (B, H, W, C) -> (B, 1 + H*W, C)."""
    b, h, w, c = x.shape
    x = torch.cat((self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)), dim=1)
    return self.pos_drop(x + interpolate_pos_encoding(self.pos_embed, (h, w)).to(x.dtype))


def use_dino_pos_interpolation(vit: VisionTransformer) -> VisionTransformer:
    """Make a timm ViT (built with ``dynamic_img_size=True``) interpolate positions as the official DINO.

    The instance's ``_pos_embed`` (timm's hook between patch embedding and blocks) is replaced;
    weights and keys are untouched. Only the official layout is supported: one class token, no
    register tokens, the class position inside ``pos_embed``.
    """
    if not getattr(vit, "dynamic_img_size", False):
        raise SslabError("DINO's position interpolation needs a timm ViT built with dynamic_img_size=True; "
                         "build it through sslab.branches.dino.build_backbone")
    if vit.cls_token is None or vit.reg_token is not None or vit.no_embed_class or vit.pos_embed is None:
        raise SslabError(f"{type(vit).__name__} is not laid out as the official DINO ViT (one class token with its "
                         "position, no register tokens); pass --pos-interpolation timm")
    vit._pos_embed = types.MethodType(_dino_pos_embed, vit)
    return vit


@torch.no_grad()
def init_dino_vit(vit: VisionTransformer) -> VisionTransformer:
    """The official DINO ViT init where timm's differs: class token ``trunc_normal_(std=0.02)``."""
    trunc_normal_(vit.cls_token, std=0.02)
    return vit
