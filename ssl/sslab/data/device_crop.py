"""Datasets that fit in device memory (CIFAR scale): images stay there as uint8 and are cropped there in batches.

The loader then only draws each sample's crop boxes (seeded per sample, so resume stays exact) and
the device does the pixel work: gather the batch's images, one ``grid_sample`` (bicubic, as the
official RandomResizedCrop) for all crops of one size, flips folded into the sampling grid. An
epoch is then bound by the model's compute, not by loading. Differences from PIL's resize: the
bicubic kernel is a = -0.75 (PIL: -0.5), and no antialiasing when a crop is shrunk (PIL widens the
kernel); both only matter for shrinking, which these recipes barely do (CIFAR's crops are upsampled,
local crops shrink at most ~1.3x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_on_device(images: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, size: int,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """Cut crops of device-resident images and resize them to ``size`` (bicubic).

    ``images`` uint8 (N, C, H, W) on the device; ``index`` (B,) sample indices (any device);
    ``boxes`` (B, V, 4) float ``(left, top, right, bottom)`` pixel boxes, V crops per image;
    ``flip`` optional (B, V) bools, mirrored crops. Returns float32 (V * B, C, size, size) in [0, 1],
    view-major (all images' first crop, then their second, ...), the layout the multi-crop model takes.
    """
    n_img, v = boxes.shape[:2]
    dev = images.device
    src = images.index_select(0, index.to(dev)).to(torch.float32).mul_(1 / 255)  # (B, C, H, W)
    h, w = images.shape[-2:]
    bx = boxes.to(dev, torch.float32).transpose(0, 1).reshape(v * n_img, 4)  # view-major
    left, top, right, bottom = bx.unbind(1)
    theta = torch.zeros(v * n_img, 2, 3, device=dev)
    # output coordinate u in (-1, 1) -> input x = (r - l) / W * u + (l + r) / W - 1 (align_corners=False)
    theta[:, 0, 0] = (right - left) / w
    theta[:, 0, 2] = (left + right) / w - 1
    theta[:, 1, 1] = (bottom - top) / h
    theta[:, 1, 2] = (top + bottom) / h - 1
    if flip is not None:
        theta[:, 0, 0] *= 1 - 2 * flip.to(dev).transpose(0, 1).reshape(-1).float()
    src = src.repeat(v, 1, 1, 1)  # (V * B, C, H, W), view-major like the boxes
    grid = F.affine_grid(theta, [v * n_img, images.shape[1], size, size], align_corners=False)
    out = F.grid_sample(src, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0, 1)  # bicubic overshoots; PIL clips to uint8 too
