"""Helpers for the evaluator tests: tiny timm encoders and sslab checkpoints written without training."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from conftest import tiny_mae_config
from sslab.branches import MAEBranch


def tiny_vit(**kw):
    """A 3-block, 32-dim ViT on 16 px grey images (patch 4: 16 tokens + class token)."""
    args = dict(img_size=16, patch_size=4, depth=3, embed_dim=32, num_heads=2, in_chans=1, num_classes=0)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw}).eval()


def tiny_swin(**kw):
    """A 2-stage Swin (2 blocks each) on 32 px images, window 4, patch 2."""
    args = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                num_classes=0)
    return timm.create_model("swin_tiny_patch4_window7_224", **{**args, **kw}).eval()


def write_mae_checkpoint(path: Path, tmp_path: Path, seed: int = 0, **changes) -> Path:
    """An sslab MAE checkpoint (random weights from ``seed``) of the tests' tiny config, as training writes it."""
    cfg = tiny_mae_config(tmp_path, **changes)
    torch.manual_seed(seed)
    model = MAEBranch(cfg).model
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "branch": {}, "step": 1, "epoch": 0}, path)
    return path
