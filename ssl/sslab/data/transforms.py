"""Image transforms of the pretraining branches (torchvision v2: PIL images and uint8 tensors)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from .device_crop import crop_on_device
from .fast_crop import crop_boxes, cut, open_for_crops

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


class MAECrop:
    """The loader's half of the MAE augmentation: image -> uint8 (C, S, S) crop, flipped with p 0.5.

    RandomResizedCrop (scale 0.2-1, bicubic) cut and resized as uint8 (``data/fast_crop.py``;
    a JPEG path is decoded at reduced scale when the crop allows); normalisation happens on the
    device (:func:`mae_views`). With ``boxes_only`` (images held on the device) it returns float
    (5,): the crop box ``(left, top, right, bottom)`` and the flip.
    """

    def __init__(self, img_size: int, scale: tuple[float, float] = (0.2, 1.0), boxes_only: bool = False):
        self.img_size, self.scale, self.boxes_only = img_size, tuple(scale), boxes_only

    def _boxes(self, width: int, height: int):
        return crop_boxes(width, height, self.scale, 1), [self.img_size]

    def __call__(self, image) -> torch.Tensor:
        if self.boxes_only:
            box = self._boxes(image.shape[-1], image.shape[-2])[0][0]
            return torch.tensor([*box, float(torch.rand(()) < 0.5)])
        img, boxes, fx, fy = open_for_crops(image, self._boxes)
        crop = cut(img, boxes, self.img_size, fx, fy)[0]
        return crop.flip(-1) if torch.rand(()) < 0.5 else crop


def mae_views(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float], images: torch.Tensor | None = None,
              index: torch.Tensor | None = None, img_size: int | None = None) -> torch.Tensor:
    """The device's half: uint8 crops (B, C, S, S) -> normalised float32; or, with device-resident
    ``images`` (N, C, H, W) uint8, the batch's ``index`` (B,) and (B, 5) boxes + flips, crop them there."""
    if images is not None:
        x = crop_on_device(images, index, batch[:, None, :4], img_size, flip=batch[:, None, 4] > 0)
    else:
        x = batch.to(torch.float32).mul_(1 / 255)
    m = torch.tensor(list(mean), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    sd = torch.tensor(list(std), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(sd)
