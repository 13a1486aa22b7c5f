"""Pictures during pretraining: every ``vis_every_epochs`` epochs the main process writes
``<output_dir>/pictures/epoch_XXXX_<kind>.png`` for the run's method and logs them to wandb.

MAE: reconstructions by the model being trained. Other methods (DINO): attention maps of the
encoder the run would export (the teacher backbone), rebuilt through the ``sslab.encoders``
contract. Pictures never change training: they run in eval mode without gradients on fixed images,
with the global RNG forked (building a timm model draws random init weights) and the model's
train/eval mode restored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..encoders import build_encoder, encoder_state_dict
from .attention_maps import attention_grid
from .grid import save_png
from .mae_reconstruction import mae_reconstruction_grid
from .samples import fixed_images

log = logging.getLogger("sslab")


@torch.no_grad()
def epoch_pictures(cfg: Config, model: nn.Module, branch: Any, run_dir: str | Path, epoch: int) -> dict[str, Path]:
    """Write this epoch's pictures; returns ``{wandb key: png path}``. ``model`` is the unwrapped model."""
    device = next(model.parameters()).device
    out_dir = Path(run_dir) / "pictures"
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        imgs = fixed_images(cfg.vis_data or cfg.data, cfg.vis_num_images, cfg.img_size, cfg.mean, cfg.std, cfg.in_chans)
        if cfg.method == "mae":
            grid = mae_reconstruction_grid(model, imgs.to(device), cfg.mask_ratio, cfg.mean, cfg.std, seed=cfg.seed)
            return {"pictures/mae_reconstruction": save_png(grid, out_dir / f"epoch_{epoch:04d}_reconstruction.png")}
        config = cfg.to_dict()
        ckpt = {"config": config, "model": model.state_dict(), "branch": branch.state_dict()}
        encoder = build_encoder(config).to(device)
        encoder.load_state_dict(encoder_state_dict(ckpt), strict=True)
        grid = attention_grid(encoder, imgs.to(device), cfg.mean, cfg.std)
        return {"pictures/attention": save_png(grid, out_dir / f"epoch_{epoch:04d}_attention.png")}


def log_epoch_pictures(cfg: Config, model: nn.Module, branch: Any, run_dir: str | Path, epoch: int, step: int,
                       logger: Any) -> dict[str, Path]:
    """:func:`epoch_pictures`, then ``logger.log_image`` for each; a failure is logged, never fatal."""
    try:
        written = epoch_pictures(cfg, model, branch, run_dir, epoch)
    except Exception as e:  # pictures are a diagnostic: they must not end a long run
        log.warning("pictures for epoch %d failed (%s: %s); training goes on", epoch, type(e).__name__, e)
        return {}
    for key, path in written.items():
        if logger is not None:
            logger.log_image(key, path, step)
    return written
