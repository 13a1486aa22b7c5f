"""DINO multi-crop augmentation (Caron et al. 2021, Sec. 3.1 and App. D; official ``DataAugmentationDINO``).

One image -> [global_1, global_2, local_1, ..., local_K]: two large crops (224 px, scale 0.4-1)
and K small ones (96 px, scale 0.05-0.4), each with its own random flip, colour jitter, grayscale,
Gaussian blur and (second global crop only) solarisation. Works on PIL images and uint8 tensors
(torchvision v2); every random draw comes from torch's generator, which the data pipeline seeds per
sample, so the views of a sample do not depend on processes, workers or resumption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from .transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import SslabError

BLUR_SIGMA = (0.1, 2.0)  # PIL ImageFilter.GaussianBlur radius range of the official code (radius = sigma)


def gaussian_blur(p: float, size: int, sigma: tuple[float, float] = BLUR_SIGMA) -> v2.Transform:
    """Blur with probability ``p``, sigma ~ U(sigma) pixels; the kernel (+-3 sigma_max) fits a ``size`` px crop."""
    k = 2 * math.ceil(3 * sigma[1]) + 1
    k = min(k, 2 * size - 1 if size > 1 else 1)  # reflect padding needs pad < size
    k = k if k % 2 == 1 else k - 1
    return v2.RandomApply([v2.GaussianBlur(k, sigma=sigma)], p=p)


class MultiCropTransform:
    """PIL image or uint8 (C, H, W) -> list of 2 + ``local_crops_number`` normalised float32 views.

    Per view (official order): RandomResizedCrop (bicubic) -> flip -> colour jitter (0.4, 0.4, 0.2,
    0.1) with p 0.8 -> grayscale p 0.2 -> Gaussian blur (p 1.0 / 0.1 / 0.5 for global 1 / global 2 /
    local) -> solarise p 0.2 (global 2 only) -> normalise. Shapes: globals (C, G, G), locals (C, L, L).
    """

    def __init__(self, global_crops_size: int = 224, global_crops_scale: tuple[float, float] = (0.4, 1.0),
                 local_crops_number: int = 8, local_crops_size: int = 96,
                 local_crops_scale: tuple[float, float] = (0.05, 0.4),
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        for name, scale in (("global_crops_scale", global_crops_scale), ("local_crops_scale", local_crops_scale)):
            if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
                raise SslabError(f"{name} must be (min, max) with 0 < min <= max <= 1, got {tuple(scale)}")
        if local_crops_number < 0:
            raise SslabError(f"local_crops_number must be >= 0, got {local_crops_number}")
        self.local_crops_number = local_crops_number

        def crop(size: int, scale) -> v2.Transform:
            return v2.RandomResizedCrop(size, scale=tuple(scale), interpolation=v2.InterpolationMode.BICUBIC,
                                        antialias=True)

        flip_and_color_jitter = [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
        normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        # uint8 tensors throughout: the same code path for PIL and in-memory sources; solarise at 128 as PIL.
        self.global_transfo1 = v2.Compose([v2.ToImage(), crop(global_crops_size, global_crops_scale),
                                           *flip_and_color_jitter, gaussian_blur(1.0, global_crops_size),
                                           *normalize])
        self.global_transfo2 = v2.Compose([v2.ToImage(), crop(global_crops_size, global_crops_scale),
                                           *flip_and_color_jitter, gaussian_blur(0.1, global_crops_size),
                                           v2.RandomSolarize(threshold=128, p=0.2), *normalize])
        self.local_transfo = v2.Compose([v2.ToImage(), crop(local_crops_size, local_crops_scale),
                                         *flip_and_color_jitter, gaussian_blur(0.5, local_crops_size),
                                         *normalize])

    def __call__(self, image) -> list[torch.Tensor]:
        crops = [self.global_transfo1(image), self.global_transfo2(image)]
        crops += [self.local_transfo(image) for _ in range(self.local_crops_number)]
        return crops
