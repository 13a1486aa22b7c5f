"""The fixed images pictures are made of: the same ones every epoch, never the augmentation stream.

They come from the dataset's held-out split (``test``, else ``val``; a tree with neither is refused
with one line, as by the evaluators), or from the split a ``spec:FOLDER`` names (``spec:all``: a folder
used whole), spread evenly over the split (an ImageFolder is sorted by class, so evenly spaced
indices show several classes, not N images of the first one), through the evaluation transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.sources import HELD_OUT_SPLIT, locate_split, open_images
from ..data.transforms import eval_transform
from ..errors import SslabError


def held_out_split(spec: str) -> str:
    """The split folder pictures of ``spec`` are made of: ``test``, else ``val``, or the one ``spec:FOLDER``
    names; raises :class:`~sslab.errors.SslabError` listing what the tree has when it has none."""
    return locate_split(spec, HELD_OUT_SPLIT, flat_ok=False)[0]


def check_picture_data(spec: str) -> None:
    """Raise before training if pictures of ``spec`` cannot be made (no held-out split)."""
    try:
        held_out_split(spec)
    except SslabError as e:
        raise SslabError(f"pictures: {e} (for pictures set --vis-data SPEC:FOLDER, e.g. '{spec}:all' to use "
                         "training images)") from None


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
    source = open_images(spec, HELD_OUT_SPLIT, channels=in_chans, flat_ok=False)
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
