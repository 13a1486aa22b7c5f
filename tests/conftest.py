"""Shared test helpers: tiny configs and small generated image folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslab import Config

torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_mae_config(tmp_path: Path, **changes) -> Config:
    """A ViT-Tiny-class MAE (depth 2, patch 4, 28 px) on the embedded demo set, fast on CPU."""
    base = Config(
        method="mae", data="demo", output_dir=str(tmp_path / "run"), model="vit_tiny_patch16_224",
        model_kwargs={"depth": 2}, img_size=28, patch_size=4, in_chans=1, mean=(0.286,), std=(0.353,),
        decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=4, epochs=2, warmup_epochs=0,
        batch_size=16, base_lr=1.5e-3, num_workers=0, log_every=1, progress_bar=False,
        wandb_mode="disabled", save_every_steps=1000, resume="",
    )
    return base.replace(**changes)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def make_image_folder(root: Path, n_per_class: int = 8, size: int = 20, classes=("a", "b", "c")) -> Path:
    """An ImageFolder of random images in assorted modes and formats (RGB, L, P, RGBA, CMYK)."""
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "P", "RGBA", "CMYK"]
    k = 0
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            img = Image.fromarray(arr).convert(modes[k % len(modes)])
            ext = "jpg" if img.mode in ("RGB", "L", "CMYK") else "png"
            img.save(root / c / f"{i:03d}.{ext}")
            k += 1
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")
