"""The fixed images pictures are made of: the same ones every epoch, never the augmentation stream.

They come from the dataset's held-out split (``test``, else ``val``) when it has one, else from the
training images, spread evenly over the split (an ImageFolder is sorted by class, so evenly spaced
indices show several classes, not N images of the first one), through the evaluation transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.named import is_named
from ..data.sources import open_images, resolve_split, unpack_tar
from ..data.transforms import eval_transform

HELD_OUT_SPLITS = ("test", "val")


def held_out_split(spec: str) -> str:
    """``"test"`` or ``"val"`` when ``--data spec`` has such a split, else ``"train"``."""
    if spec == "demo" or spec.startswith("demo:"):
        return "test"
    path = Path(spec).expanduser()
    if not path.exists() and is_named(spec):
        return "test"
    if path.is_file():
        path = unpack_tar(path)
    if path.is_dir():
        for split in HELD_OUT_SPLITS:
            if resolve_split(path, split).name == split:
                return split
    return "train"


def fixed_indices(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (all of them if ``n >= n_total``)."""
    if n < 1:
        raise ValueError(f"need at least one image, got {n}")
    if n >= n_total:
        return list(range(n_total))
    return [int(i) for i in np.linspace(0, n_total - 1, n).round()]


def fixed_images(spec: str, n: int, img_size: int, mean: Sequence[float], std: Sequence[float],
                 in_chans: int) -> torch.Tensor:
    """(n, in_chans, img_size, img_size) normalised images: the fixed picture set of ``--data spec``."""
    source = open_images(spec, held_out_split(spec), channels=in_chans)
    transform = eval_transform(img_size, mean, std)
    out = []
    for i in fixed_indices(len(source), n):
        img, _ = source[i]
        if hasattr(img, "convert"):  # PIL (ImageFolder is RGB): match the model's channels
            img = img.convert("L" if in_chans == 1 else "RGB")
        x = transform(img)
        if x.shape[0] != in_chans:
            raise ValueError(f"--data {spec!r} gives {x.shape[0]}-channel images, the model takes {in_chans}")
        out.append(x)
    return torch.stack(out)
