"""Image transforms of the pretraining branches (torchvision v2: PIL images and uint8 tensors)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_tensor(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """PIL or uint8 (C, H, W) -> normalised float32 (C, H, W)."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def mae_transform(img_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  scale: tuple[float, float] = (0.2, 1.0)) -> v2.Compose:
    """MAE pretraining augmentation (official ``main_pretrain.py``): RandomResizedCrop(scale 0.2-1,
    bicubic) + horizontal flip + normalise. Output (C, img_size, img_size) float32."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(img_size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def eval_transform(img_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   crop_pct: float = 0.875) -> v2.Compose:
    """Resize the short side to ``img_size / crop_pct`` (bicubic), centre-crop, normalise."""
    resize = int(round(img_size / crop_pct)) if img_size >= 64 else img_size  # small images: no rescale
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(img_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])
