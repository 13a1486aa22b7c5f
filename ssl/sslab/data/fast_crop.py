"""Crops for the loader workers: decode at reduced size when the crops allow, then crop + resize in one call on uint8.

``RandomResizedCrop`` (Szegedy et al. 2015; torchvision's sampling: area fraction ~ U(scale), log
aspect ratio ~ U(log 3/4, log 4/3), ten tries, then a centre crop) is split into drawing the boxes
(:func:`crop_boxes`, from torch's generator, which the pipeline seeds per sample) and cutting them
(:func:`cut`): one ``PIL.Image.resize(box=...)`` per crop (bicubic, as the official code), no
intermediate crop image, no float conversion. JPEGs are decoded with ``Image.draft`` at 1/2, 1/4
or 1/8 scale when every crop still has at least its output size in pixels (large photos, small
crops), which cuts decoding time by the square of the factor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .image_folder import load_rgb

RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of RandomResizedCrop (torchvision's default, the official code's)
TRIES = 10
REDUCING_GAP = 3.0  # PIL: shrink by whole factors first when downscaling more than 3x (same look, faster)


def crop_boxes(width: int, height: int, scale: tuple[float, float], n: int,
               ratio: tuple[float, float] = RATIO) -> list[tuple[int, int, int, int]]:
    """``n`` RandomResizedCrop boxes ``(left, top, right, bottom)`` of a ``width`` x ``height`` image.

    All random numbers come in one draw from torch's global generator: (n, 10 tries, 4) uniforms.
    """
    u = torch.rand(n, TRIES, 4).tolist()
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    boxes = []
    for tries in u:
        for s, r, ui, uj in tries:
            target = area * (scale[0] + (scale[1] - scale[0]) * s)
            aspect = math.exp(log_lo + (log_hi - log_lo) * r)
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(ui * (height - h + 1)), int(uj * (width - w + 1))
                boxes.append((left, top, left + w, top + h))
                break
        else:  # torchvision's fallback: the largest centre crop within the ratio range
            in_ratio = width / height
            if in_ratio < ratio[0]:
                w, h = width, round(width / ratio[0])
            elif in_ratio > ratio[1]:
                w, h = round(height * ratio[1]), height
            else:
                w, h = width, height
            left, top = (width - w) // 2, (height - h) // 2
            boxes.append((left, top, left + w, top + h))
    return boxes


def draft_factor(boxes: Sequence[tuple[int, int, int, int]], sizes: Sequence[int]) -> int:
    """The largest JPEG draft reduction (1, 2, 4 or 8) that leaves every box at least its output size."""
    room = min(min(b[2] - b[0], b[3] - b[1]) / s for b, s in zip(boxes, sizes))
    factor = 1
    while factor < 8 and room >= 2 * factor:
        factor *= 2
    return factor


def open_for_crops(image, boxes_for) -> tuple[Image.Image, list, float, float]:
    """Open ``image`` (a path, a PIL image or a uint8 (C, H, W) tensor) for cutting crops.

    ``boxes_for(width, height) -> (boxes, sizes)`` draws the crops on the full-size grid; a JPEG
    file is then decoded with the largest draft reduction they allow. Returns the RGB (or L) image,
    the boxes and the x/y factors from the full-size grid to the decoded one.
    """
    if isinstance(image, (str, os.PathLike)):
        drawn = {}

        def draft(width: int, height: int):  # called once with the file's size, before decoding
            drawn["boxes"], sizes = boxes_for(width, height)
            drawn["size"] = (width, height)
            factor = draft_factor(drawn["boxes"], sizes)
            return (math.ceil(width / factor), math.ceil(height / factor)) if factor > 1 else None

        img = load_rgb(image, draft=draft)
        width, height = drawn["size"]
        return img, drawn["boxes"], img.size[0] / width, img.size[1] / height
    if isinstance(image, torch.Tensor):
        arr = image.permute(1, 2, 0).numpy()
        image = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    boxes, _ = boxes_for(*image.size)
    return image, boxes, 1.0, 1.0


def cut(img: Image.Image, boxes: Sequence[tuple[int, int, int, int]], size: int, fx: float = 1.0,
        fy: float = 1.0) -> torch.Tensor:
    """Crop ``boxes`` (on a grid ``1/fx``, ``1/fy`` times the image's) and resize each to ``size`` (bicubic).

    Returns uint8 (len(boxes), C, size, size); C is 1 for an "L" image, else 3.
    """
    n = len(boxes)
    # One canvas, one conversion to numpy: per-crop conversions cost more than the resizes of small crops.
    canvas = Image.new(img.mode, (size * n, size))
    for i, (l, t, r, b) in enumerate(boxes):
        canvas.paste(img.resize((size, size), Image.Resampling.BICUBIC, box=(l * fx, t * fy, r * fx, b * fy),
                                reducing_gap=REDUCING_GAP), (i * size, 0))
    arr = np.array(canvas)  # writable (asarray of a PIL image is read-only)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr).view(size, n, size, arr.shape[-1]).permute(1, 3, 0, 2)
