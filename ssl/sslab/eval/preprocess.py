"""Images for evaluation: in the encoder's channel count and size, through the eval transform of the
method's paper.

- Eval transform (MAE ``main_linprobe.py``/``main_finetune.py`` ``build_transform(is_train=False)``,
  DINO ``eval_linear.py``/``eval_knn.py``): resize the short side to ``img_size / 0.875`` (bicubic;
  256 for 224), centre-crop ``img_size``, normalise with the pretraining run's mean/std. Both papers
  use the same one. Images under 64 px (CIFAR, the demo set) are not rescaled before the crop
  (:func:`sslab.data.transforms.eval_transform`), the usual protocol for them.
- Augmented linear probe crops: MAE's ``RandomResizedCrop`` (``util/crop.py``: one draw of scale and
  log-ratio, no retry loop, the box clipped to the image; bicubic) and DINO's torchvision
  ``RandomResizedCrop`` (its retry loop, bilinear by default), each with a horizontal flip.
- Channels: PIL images are converted to ``L`` (1 channel) or ``RGB`` (3); uint8 tensors with the
  other count are converted the same way (ITU-R 601 luma, as PIL's ``convert("L")``; grey repeated).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

from ..data.transforms import eval_transform


def to_channels(img, in_chans: int):
    """A PIL image or uint8 (C, H, W) tensor with ``in_chans`` (1 or 3) channels."""
    if hasattr(img, "convert"):
        mode = "L" if in_chans == 1 else "RGB"
        return img if img.mode == mode else img.convert(mode)
    if torch.is_tensor(img) and img.ndim == 3 and img.shape[0] != in_chans:
        if in_chans == 1 and img.shape[0] == 3:
            w = torch.tensor([299, 587, 114], dtype=torch.int32).view(3, 1, 1)
            return ((img.to(torch.int32) * w).sum(0, keepdim=True) // 1000).to(torch.uint8)
        if in_chans == 3 and img.shape[0] == 1:
            return img.expand(3, -1, -1).contiguous()
    return img


class _Channels:
    """``to_channels`` as a transform step (a class, so a transform stays picklable and has a stable repr)."""

    def __init__(self, in_chans: int):
        self.in_chans = in_chans

    def __call__(self, img):
        return to_channels(img, self.in_chans)

    def __repr__(self) -> str:
        return f"Channels({self.in_chans})"


def eval_image_transform(img_size: int, mean: Sequence[float], std: Sequence[float], in_chans: int) -> Callable:
    """The papers' eval transform in the encoder's channels: image -> float (in_chans, img_size, img_size)."""
    return v2.Compose([_Channels(in_chans), eval_transform(img_size, mean, std)])


class MAERandomResizedCrop(v2.RandomResizedCrop):
    """MAE ``util/crop.py``: the scale and the log aspect ratio are drawn once, the box is clipped to the
    image instead of redrawn (TF/BYOL behaviour), at a uniformly random position."""

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.functional.get_size(flat_inputs[0])
        area = height * width
        target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
        log_ratio = torch.log(torch.tensor(self.ratio))
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item()).item())
        w = min(int(round(math.sqrt(target_area * aspect))), width)
        h = min(int(round(math.sqrt(target_area / aspect))), height)
        top = int(torch.randint(0, height - h + 1, size=(1,)).item())
        left = int(torch.randint(0, width - w + 1, size=(1,)).item())
        return {"top": top, "left": left, "height": h, "width": w}


def probe_train_transform(recipe: str, img_size: int, mean: Sequence[float], std: Sequence[float],
                          in_chans: int) -> v2.Compose:
    """The augmented probe's training transform of ``recipe`` ('mae' or 'dino'), see the module docstring."""
    if recipe == "mae":
        crop = MAERandomResizedCrop(img_size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC,
                                    antialias=True)
    elif recipe == "dino":
        crop = v2.RandomResizedCrop(img_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    else:
        raise ValueError(f"recipe must be 'mae' or 'dino', got {recipe!r}")
    return v2.Compose([_Channels(in_chans), v2.ToImage(), crop, v2.RandomHorizontalFlip(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
