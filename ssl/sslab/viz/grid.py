"""Picture grids: rows of equally sized cells (images or heat maps) with column titles, saved as PNG.

Tiny images (28 px Fashion-MNIST, 32 px CIFAR) are enlarged with nearest-neighbour upsampling so
each cell is at least ``MIN_CELL`` pixels wide and patches stay sharp-edged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

MIN_CELL = 112   # pixels: smallest cell side after upscaling
PAD = 2          # pixels between cells and around the grid
HEADER = 16      # pixels: the row of column titles
BACKGROUND = (255, 255, 255)


def upscale_factor(size: int, min_cell: int = MIN_CELL) -> int:
    """Integer factor that brings ``size`` pixels to at least ``min_cell`` (1 for large images)."""
    return max(1, math.ceil(min_cell / size))


def to_rgb(img: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [0, 1] with C 1 or 3 -> (3, H, W)."""
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (1 or 3, H, W), got {tuple(img.shape)}")
    return img.expand(3, -1, -1) if img.shape[0] == 1 else img


def colorize(heat: torch.Tensor, cmap: str = "inferno") -> torch.Tensor:
    """(H, W) map -> (3, H, W) RGB in [0, 1]: min-max normalised per map, then a matplotlib colormap."""
    from matplotlib import colormaps

    h = heat.detach().float().cpu()
    lo, hi = h.min(), h.max()
    h = (h - lo) / (hi - lo) if hi > lo else torch.zeros_like(h)
    rgb = colormaps[cmap](h.numpy())[..., :3]  # (H, W, 3) floats
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()


def resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W) by nearest-neighbour (patch maps and tiny images keep hard edges)."""
    return F.interpolate(x[None].float(), size=size, mode="nearest")[0]


def grid_size(rows: int, cols: int, cell: tuple[int, int]) -> tuple[int, int]:
    """(width, height) in pixels of a grid of ``rows`` x ``cols`` cells of ``cell`` = (H, W)."""
    return cols * cell[1] + (cols + 1) * PAD, HEADER + rows * cell[0] + (rows + 1) * PAD


def make_grid(rows: Sequence[Sequence[torch.Tensor]], titles: Sequence[str], min_cell: int = MIN_CELL) -> Image.Image:
    """Compose cells (each (1 or 3, H, W) in [0, 1], all the same size) into one RGB image.

    ``rows[i][j]`` is the cell of row i, column j; ``titles[j]`` is written above column j.
    """
    if not rows or any(len(r) != len(titles) for r in rows):
        raise ValueError(f"every row needs one cell per title ({len(titles)}); got rows of {[len(r) for r in rows]}")
    h, w = rows[0][0].shape[-2:]
    k = upscale_factor(min(h, w), min_cell)
    cell = (h * k, w * k)
    width, height = grid_size(len(rows), len(titles), cell)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles):
        x0 = PAD + j * (cell[1] + PAD)
        draw.text((x0 + 2, 2), str(title)[: max(1, cell[1] // 6)], fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img.shape[-2:] != (h, w):
                raise ValueError(f"cell ({i}, {j}) is {tuple(img.shape[-2:])}, expected {(h, w)}")
            rgb = resize_nearest(to_rgb(img.detach().float().cpu().clamp(0, 1)), cell)
            arr = (rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            canvas.paste(Image.fromarray(arr), (PAD + j * (cell[1] + PAD), HEADER + PAD + i * (cell[0] + PAD)))
    return canvas


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``img`` as PNG (creating the folder) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p, format="PNG")
    return p
