"""DINO's Swin pads a stage to whole windows before the cyclic shift, as EsViT: checked against a direct
implementation of EsViT's block on the same weights, for crops whose grids the windows do not tile."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from sslab import Config
from sslab.branches.dino import build_backbone


def esvit_region_mask(hp: int, wp: int, win: int, shift: int) -> torch.Tensor:
    """EsViT's create_attn_mask on the padded grid: (nW, win*win, win*win), -100 across regions."""
    img = torch.zeros(hp, wp)
    cnt = 0
    for hs in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
        for ws in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
            img[hs, ws] = cnt
            cnt += 1
    regions = img.view(hp // win, win, wp // win, win).permute(0, 2, 1, 3).reshape(-1, win * win)
    diff = regions[:, None, :] - regions[:, :, None]
    return torch.where(diff != 0, -100.0, 0.0)


def esvit_block(blk, x: torch.Tensor) -> torch.Tensor:
    """One Swin block in EsViT's order, attention written out: (B, H, W, C) -> (B, H, W, C)."""
    b, h, w, c = x.shape
    win, shift = blk.window_size[0], blk.shift_size[0]
    a = blk.attn
    y = blk.norm1(x)
    y = F.pad(y, (0, 0, 0, (win - w % win) % win, 0, (win - h % win) % win))  # pad first ...
    hp, wp = y.shape[1:3]
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))  # ... then shift the padded grid
    y = y.view(b, hp // win, win, wp // win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, win * win, c)
    heads = a.num_heads
    qkv = a.qkv(y).view(y.shape[0], win * win, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    bias = a.relative_position_bias_table[a.relative_position_index.view(-1)].view(win * win, win * win, -1)
    logits = (q * a.scale) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)[None]
    if shift:
        nw = (hp // win) * (wp // win)
        logits = logits.view(b, nw, heads, win * win, win * win) + esvit_region_mask(hp, wp, win, shift)[None, :, None]
        logits = logits.view(-1, heads, win * win, win * win)
    y = a.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(-1, win * win, c))
    y = y.view(b, hp // win, wp // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if shift:
        y = torch.roll(y, (shift, shift), (1, 2))
    x = x + y[:, :h, :w]
    return x + blk.mlp(blk.norm2(x))


def esvit_features(swin, imgs: torch.Tensor) -> torch.Tensor:
    """Pooled features (B, D): patch embedding, stages (timm's PatchMerging pads odd grids, as EsViT's),
    EsViT blocks, final norm, average over tokens."""
    x = swin.patch_embed(imgs)
    for layer in swin.layers:
        x = layer.downsample(x)
        for blk in layer.blocks:
            x = esvit_block(blk, x)
    return swin.norm(x).mean(dim=(1, 2))


def tiny_swin_cfg() -> Config:
    """Swin-T's layout (patch 4, window 7, 4 stages) at 224 px, narrow: the 96 px crop gives 24/12/6/3 grids."""
    return Config(method="dino", model="swin_tiny_patch4_window7_224", img_size=224,
                  model_kwargs={"depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4], "embed_dim": 8})


@pytest.mark.parametrize("crop", [96, 224])
def test_swin_crops_match_esvit_pad_then_shift(crop):
    torch.manual_seed(0)
    swin = build_backbone(tiny_swin_cfg()).eval().double()
    with torch.no_grad():
        for name, p in swin.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_()  # position biases large enough to tell windows apart
        x = torch.randn(1, 3, crop, crop, dtype=torch.float64)
        got, want = swin(x), esvit_features(swin, x)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
        plain = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, dynamic_img_size=True,
                                  **tiny_swin_cfg().model_kwargs).eval().double()
        plain.load_state_dict(swin.state_dict())
        rel = ((plain(x) - want).norm() / want.norm()).item()  # timm's own order: shift, then pad
    assert (rel > 1e-3) if crop != 224 else (rel < 1e-12), rel
