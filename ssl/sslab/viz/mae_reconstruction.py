"""MAE reconstructions: original | masked | reconstruction | reconstruction with visible patches pasted back.

As in the official visualisation notebook (``demo/mae_visualize.ipynb``, ``run_one_image``): the
model sees the image with a random mask, the prediction is unpatchified, and the last column shows
``x * (1 - mask) + y * mask``. The mask comes from a fixed noise seed, so the same images get the
same masks every epoch. A model trained with ``norm_pix_loss`` predicts each patch normalised by its
own mean and variance (MAE Sec. 3, "Reconstruction target"); those predictions are mapped back to
pixels with the mean and variance of each target patch, the only statistics that exist for them.
So with ``norm_pix_loss`` even an untrained model shows every removed patch at its true mean
brightness: judge what a run learned by the structure inside the patches, not by their tone.
Works for any model with this interface (the ViT MAE and the Swin MAE of ``sslab.models``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from .grid import make_grid

MASKED_GRAY = 0.5  # removed patches are shown as mid-gray in the "masked" column
TITLES = ("original", "masked", "reconstruction", "recon. + visible")
_NEEDED = ("num_patches", "patchify", "unpatchify", "norm_pix_loss")


@torch.no_grad()
def mae_reconstruct(model: nn.Module, imgs: torch.Tensor, mask_ratio: float, mean: Sequence[float],
                    std: Sequence[float], seed: int = 0) -> dict[str, torch.Tensor]:
    """Run ``model`` (an MAE: ``forward(imgs, mask_ratio, noise) -> (loss, pred, mask)``) in eval mode.

    imgs: (N, C, H, W) normalised with ``mean``/``std``. Returns pictures in [0, 1], each (N, C, H, W):
    ``original``, ``masked``, ``reconstruction``, ``pasted``; and ``mask`` (N, L), 1 = removed.
    The noise is drawn from its own generator seeded with ``seed``: global RNG is not touched.
    """
    missing = [a for a in _NEEDED if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{type(model).__name__} lacks {missing}; MAE pictures need an MAE model with "
                        "patchify/unpatchify/num_patches/norm_pix_loss like sslab.models.mae.MaskedAutoencoderViT")
    n = imgs.shape[0]
    noise = torch.rand(n, model.num_patches, generator=torch.Generator().manual_seed(seed)).to(imgs.device)
    was_training = model.training
    model.eval()
    try:
        _, pred, mask = model(imgs, mask_ratio=mask_ratio, noise=noise)
    finally:
        model.train(was_training)
    pred = pred.float()
    if model.norm_pix_loss:
        target = model.patchify(imgs.float())
        pred = pred * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    m = torch.as_tensor(mean, dtype=torch.float32, device=imgs.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=imgs.device).view(1, -1, 1, 1)

    def to_pixels(x: torch.Tensor) -> torch.Tensor:
        return (x.float() * s + m).clamp(0, 1)

    removed = model.unpatchify(mask.float().unsqueeze(-1).expand(-1, -1, pred.shape[-1]))  # (N, C, H, W), 1 = removed
    original, recon = to_pixels(imgs), to_pixels(model.unpatchify(pred))
    return {"original": original, "masked": original * (1 - removed) + MASKED_GRAY * removed,
            "reconstruction": recon, "pasted": original * (1 - removed) + recon * removed, "mask": mask}


def mae_reconstruction_grid(model: nn.Module, imgs: torch.Tensor, mask_ratio: float, mean: Sequence[float],
                            std: Sequence[float], seed: int = 0, **grid_kwargs: Any) -> Image.Image:
    """One row per image, columns :data:`TITLES`; see :func:`mae_reconstruct`."""
    out = mae_reconstruct(model, imgs, mask_ratio, mean, std, seed)
    keys = ("original", "masked", "reconstruction", "pasted")
    rows = [[out[k][i] for k in keys] for i in range(imgs.shape[0])]
    return make_grid(rows, TITLES, **grid_kwargs)
