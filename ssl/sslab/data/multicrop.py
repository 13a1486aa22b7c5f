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

from ..errors import SslabError
from .device_crop import crop_on_device
from .fast_crop import crop_boxes, cut, open_for_crops
from .photometric import apply_photometric, draw_params
from .transforms import IMAGENET_MEAN, IMAGENET_STD

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


def _check_scales(global_crops_scale, local_crops_scale, local_crops_number) -> None:
    for name, scale in (("global_crops_scale", global_crops_scale), ("local_crops_scale", local_crops_scale)):
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise SslabError(f"{name} is {tuple(scale)}; give (min, max) area fractions with 0 < min <= max <= 1, "
                             f"e.g. --{name.replace('_', '-')} 0.4,1.0")
    if local_crops_number < 0:
        raise SslabError(f"local_crops_number is {local_crops_number}; give 0 (no local crops) or more")


class MultiCropCrops:
    """The loader's half of the batched multi-crop: crops as uint8 and the photometric parameters.

    One image (a file path, decoded at reduced JPEG scale when the crops allow; a PIL image; or a
    uint8 (C, H, W) tensor) -> ``[globals uint8 (2, C, G, G), locals uint8 (K, C, L, L),
    global params (2, P), local params (K, P)]``; the crops are cut and resized as uint8
    (bicubic, ``data/fast_crop.py``). With ``boxes_only`` (images held on the device, ``data/device_crop.py``) the first
    two items are the crop boxes instead, float (2, 4) and (K, 4). Every random number is drawn here,
    under the per-sample seed; :func:`multicrop_views` does the rest on the model's device.
    """

    def __init__(self, global_crops_size: int = 224, global_crops_scale: tuple[float, float] = (0.4, 1.0),
                 local_crops_number: int = 8, local_crops_size: int = 96,
                 local_crops_scale: tuple[float, float] = (0.05, 0.4), boxes_only: bool = False):
        _check_scales(global_crops_scale, local_crops_scale, local_crops_number)
        self.global_size, self.global_scale = global_crops_size, tuple(global_crops_scale)
        self.local_number, self.local_size, self.local_scale = local_crops_number, local_crops_size, tuple(local_crops_scale)
        self.boxes_only = boxes_only
        self.kinds = ["global1", "global2"] + ["local"] * local_crops_number

    def _boxes(self, width: int, height: int):
        boxes = crop_boxes(width, height, self.global_scale, 2)
        boxes += crop_boxes(width, height, self.local_scale, self.local_number) if self.local_number else []
        return boxes, [self.global_size] * 2 + [self.local_size] * self.local_number

    def __call__(self, image) -> list[torch.Tensor]:
        if self.boxes_only:
            boxes, _ = self._boxes(image.shape[-1], image.shape[-2])
            b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            params = draw_params(self.kinds)
            return [b[:2], b[2:], params[:2], params[2:]]
        img, boxes, fx, fy = open_for_crops(image, self._boxes)
        g = cut(img, boxes[:2], self.global_size, fx, fy)
        l = (cut(img, boxes[2:], self.local_size, fx, fy) if self.local_number
             else torch.empty(0, g.shape[1], self.local_size, self.local_size, dtype=torch.uint8))
        params = draw_params(self.kinds)
        return [g, l, params[:2], params[2:]]


def multicrop_views(batch: list[torch.Tensor], mean: Sequence[float], std: Sequence[float],
                    images: torch.Tensor | None = None, index: torch.Tensor | None = None,
                    global_crops_size: int | None = None, local_crops_size: int | None = None) -> list[torch.Tensor]:
    """The device's half: a collated :class:`MultiCropCrops` batch -> the 2 + K views, each (B, C, S, S).

    ``batch`` is ``[globals (B, 2, C, G, G), locals (B, K, C, L, L), params (B, 2, P), params (B, K, P)]``
    (uint8 crops), or with device-resident ``images`` (N, C, H, W) uint8 and the batch's sample
    ``index`` (B,), boxes (B, 2, 4) and (B, K, 4) in place of the crops (then the sizes are needed).
    Views come in the official order [global 1, global 2, local 1, ..., local K], normalised float32.
    """
    g, l, pg, pl = batch
    b = pg.shape[0]
    out = []
    for crops, params in ((g, pg), (l, pl)):
        v = params.shape[1]
        if v == 0:
            continue
        if images is not None:
            size = global_crops_size if crops is g else local_crops_size
            x = crop_on_device(images, index, crops, size)  # view-major float (V * B, C, S, S)
        else:
            x = crops.transpose(0, 1).reshape(v * b, *crops.shape[2:])  # view-major, uint8
        p = params.transpose(0, 1).reshape(v * b, params.shape[-1])
        x = apply_photometric(x, p, mean, std)
        out += list(x.view(v, b, *x.shape[1:]).unbind(0))
    return out
