"""Swin windows for crops whose token grid the window does not tile: pad first, then shift (EsViT).

DINO on Swin (EsViT, Li et al. 2021, arXiv 2106.09785; official microsoft/esvit
``models/swin_transformer.py``, ``SwinTransformerBlock.forward``) runs the 96 px local crops through
windows laid out for 224 px: a stage grid that the window does not tile (24 x 24 tokens, window 7) is
padded with zero tokens at the bottom and right to whole windows (28 x 28), and the cyclic shift and
its attention mask then act on the padded grid (the mask built for Hp x Wp). timm's block does the
two in the other order (roll the 24 x 24 grid, then pad), so other tokens share windows and the
features differ. :func:`use_pad_then_shift` gives a timm Swin EsViT's order. Where the window tiles the
grid (every global crop) there is no padding and both orders are the same computation.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, window_partition, window_reverse


def pad_then_shift_attn(self: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """EsViT's window attention of one block on normed tokens: (B, H, W, C) -> (B, H, W, C).

    Pad to whole windows, roll the padded grid by ``-shift``, attend within windows (with the
    shifted-region mask of the padded grid), roll back, crop the padding.
    """
    _, h, w, c = x.shape
    (wh, ww), (sh, sw) = self.window_size, self.shift_size
    x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
    hp, wp = x.shape[1], x.shape[2]
    mask = None
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        mask = self.get_attn_mask(x)  # regions of the padded grid: EsViT's create_attn_mask(Hp, Wp)
    windows = self.attn(window_partition(x, self.window_size).view(-1, wh * ww, c), mask=mask)
    x = window_reverse(windows.view(-1, wh, ww, c), self.window_size, hp, wp)
    if sh or sw:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    return x[:, :h, :w].contiguous()


def use_pad_then_shift(swin: SwinTransformer) -> SwinTransformer:
    """Make every block of a timm Swin pad before its cyclic shift, as EsViT; weights and keys unchanged.

    Each block's ``_attn`` (timm's window attention step between ``norm1`` and the residual) is
    replaced on the instance.
    """
    for layer in swin.layers:
        for blk in layer.blocks:
            if getattr(blk, "always_partition", False):
                raise ValueError("always_partition=True is not supported with EsViT's padding; leave it False")
            blk._attn = types.MethodType(pad_then_shift_attn, blk)
    return swin
