"""Geometry of a timm Swin: token grid and window of every stage, and the MAE masking units.

One check, used by every branch that puts a Swin in training, so that an image size, patch size
and window size that do not fit together stop the run with the numbers and a way out before any
forward pass. timm would otherwise pad silently: a stage grid that a window does not tile gets
zero tokens that act as attention keys, and an odd grid gets a zero row before patch merging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.models import model_entrypoint
from timm.models.swin_transformer import SwinTransformer

Pair = tuple[int, int]


@dataclass(frozen=True)
class SwinGeometry:
    """Stage-by-stage layout of a Swin whose sizes fit exactly (no padding anywhere).

    ``grids[s]`` is stage ``s``'s token grid, ``windows[s]`` its window and ``shifts[s]`` the shift of
    its odd blocks, both after timm's rule (a window as large as the grid covers it, unshifted).
    The MAE masking unit is one token of the last stage: ``unit_px`` pixels, ``unit_tokens(s)``
    tokens of stage ``s`` on a side, ``units`` of them on the ``unit_grid``.
    """

    img_size: Pair
    patch_size: Pair
    grids: tuple[Pair, ...]
    windows: tuple[Pair, ...]
    shifts: tuple[Pair, ...]

    @property
    def num_stages(self) -> int:
        return len(self.grids)

    @property
    def unit_grid(self) -> Pair:
        return self.grids[-1]

    @property
    def units(self) -> int:
        return self.grids[-1][0] * self.grids[-1][1]

    @property
    def unit_px(self) -> Pair:
        f = 2 ** (self.num_stages - 1)
        return (self.patch_size[0] * f, self.patch_size[1] * f)

    def unit_tokens(self, stage: int) -> int:
        """Side of a masking unit in tokens of ``stage`` (patch merging halves it at each stage)."""
        return 2 ** (self.num_stages - 1 - stage)


def _pair(x) -> Pair:
    return (int(x), int(x)) if isinstance(x, int) else (int(x[0]), int(x[1]))


def _fmt(p: Pair) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def validate_swin_geometry(img_size, patch_size, window_sizes, name: str = "swin") -> SwinGeometry:
    """Check that ``img_size``, ``patch_size`` and the per-stage ``window_sizes`` fit exactly.

    ``window_sizes`` has one int or (h, w) per stage, as configured (before timm clips a window
    to a smaller grid). Requires: the image is a whole number of patches; the patch grid halves
    exactly at each of the ``S - 1`` patch merges (so it is a multiple of ``2**(S-1)``, and a
    masking unit of the last stage is a whole square of tokens at every stage); every stage's grid
    is tiled by its window. Raises ``ValueError`` naming the value and a fix; returns the geometry.
    """
    img, patch = _pair(img_size), _pair(patch_size)
    windows_cfg = [_pair(w) for w in window_sizes]
    stages = len(windows_cfg)
    if any(p < 1 for p in patch) or any(i < 1 for i in img):
        raise ValueError(f"{name}: img_size {_fmt(img)} and patch_size {_fmt(patch)} must be positive")
    for i, p in zip(img, patch):
        if i % p:
            raise ValueError(
                f"{name}: img_size {_fmt(img)} is not a multiple of patch_size {_fmt(patch)}; "
                f"use an image size divisible by the patch size (e.g. {max(p, i - i % p)})"
            )
    grid = (img[0] // patch[0], img[1] // patch[1])
    f = 2 ** (stages - 1)
    for g, p in zip(grid, patch):
        if g % f:
            unit = p * f
            raise ValueError(
                f"{name}: img_size {_fmt(img)} with patch_size {_fmt(patch)} gives a {_fmt(grid)} patch grid, "
                f"which the {stages - 1} patch merges of a {stages}-stage Swin cannot halve exactly; use an "
                f"img_size that is a multiple of patch_size x 2**{stages - 1} = {unit} "
                f"(e.g. {max(unit, g * p - g * p % unit)}), or fewer stages"
            )
    grids, windows, shifts = [], [], []
    for s, w in enumerate(windows_cfg):
        res = (grid[0] // 2**s, grid[1] // 2**s)
        # timm (SwinTransformerBlock._calc_window_shift): a window at least as large as the grid becomes
        # the grid and is not shifted.
        win = tuple(r if r <= ws else ws for r, ws in zip(res, w))
        shift = tuple(0 if r <= ws else ws // 2 for r, ws in zip(res, w))
        for r, ws in zip(res, win):
            if r % ws:
                fits = [d for d in range(2, r + 1) if r % d == 0]
                raise ValueError(
                    f"{name}: stage {s} has a {_fmt(res)} token grid (img_size {_fmt(img)}, patch_size "
                    f"{_fmt(patch)}) that window_size {_fmt(w)} does not tile; timm would pad it with zero "
                    f"tokens that take part in attention. Use a window_size that divides {r} "
                    f"(one of {fits}) or change img_size"
                )
        grids.append(res)
        windows.append(win)
        shifts.append(shift)
    return SwinGeometry(img, patch, tuple(grids), tuple(windows), tuple(shifts))


def swin_geometry(model: SwinTransformer, name: str = "swin") -> SwinGeometry:
    """Validate a built timm ``SwinTransformer`` and return its geometry (see :func:`validate_swin_geometry`).

    Also checks the result against the windows and shifts timm's blocks actually use, so a change
    of timm's rule cannot go unnoticed.
    """
    if not isinstance(model, SwinTransformer):
        raise ValueError(f"{name} is a {type(model).__name__}, not a timm SwinTransformer")
    if any(getattr(b, "always_partition", False) for layer in model.layers for b in layer.blocks):
        raise ValueError(f"{name}: always_partition=True is not supported; leave it at timm's default False")
    # The configured windows (recent timm keeps them); older timm: the blocks' windows, which differ
    # from the configured ones only where they cover the whole grid, and then fit anyway.
    ref = getattr(model, "_ref_window_sizes", None)
    windows_cfg = [tuple(w) for w in ref] if ref else [tuple(layer.blocks[0].window_size) for layer in model.layers]
    geom = validate_swin_geometry(model.patch_embed.img_size, model.patch_embed.patch_size, windows_cfg, name)
    for s, layer in enumerate(model.layers):
        for j, blk in enumerate(layer.blocks):
            shift = geom.shifts[s] if j % 2 else (0, 0)
            if (tuple(blk.input_resolution), tuple(blk.window_size), tuple(blk.shift_size)) != (
                    geom.grids[s], geom.windows[s], shift):
                raise RuntimeError(
                    f"{name}: stage {s} block {j} runs grid {blk.input_resolution}, window {blk.window_size}, "
                    f"shift {blk.shift_size}; expected {geom.grids[s]}, {geom.windows[s]}, {shift} "
                    "(has timm's window rule changed?)"
                )
    return geom


def is_timm_swin(name: str) -> bool:
    """True when ``name`` is a timm model built by ``timm.models.swin_transformer`` (Swin v1)."""
    try:
        return model_entrypoint(name).__module__ == "timm.models.swin_transformer"
    except (KeyError, RuntimeError):  # unknown model name
        return False


def create_swin(encoder_name: str, **timm_kwargs: Any) -> tuple[SwinTransformer, SwinGeometry]:
    """A randomly initialised timm Swin (``num_classes=0``) and its geometry, sizes checked first.

    The check runs on a weightless copy built on the meta device, so a bad size fails in well
    under a second instead of after initialising the real model.
    """
    if not is_timm_swin(encoder_name):
        raise ValueError(f"{encoder_name!r} is not a timm Swin (v1) model; e.g. {timm.list_models('swin_*')[:6]}")
    with torch.device("meta"):
        swin_geometry(timm.create_model(encoder_name, pretrained=False, num_classes=0, **timm_kwargs), encoder_name)
    model = timm.create_model(encoder_name, pretrained=False, num_classes=0, **timm_kwargs)
    return model, swin_geometry(model, encoder_name)


def validate_swin_crops(model: SwinTransformer, global_size: int, local_size: int | None = None,
                        name: str = "swin") -> SwinGeometry:
    """Multi-crop (DINO) on a timm Swin built with ``dynamic_img_size=True``: check the crop sizes.

    The global crops must be the size the model's windows were laid out for (its ``img_size``) and
    fit it exactly (:func:`swin_geometry`). Local crops of another size need only be a whole number of
    patches: each stage is padded to whole windows before the cyclic shift (EsViT's order, arXiv
    2106.09785, :mod:`sslab.models.swin_pad_shift`) and odd grids before merging, with zero tokens that
    take part in attention, as EsViT does for its 96 px crops.
    """
    geom = swin_geometry(model, name)
    if (global_size, global_size) != geom.img_size:
        raise ValueError(
            f"{name}: the global crops are {global_size} px but the Swin's windows are laid out for img_size "
            f"{geom.img_size[0]}; set img_size to the global crop size (or leave global_crops_size unset)"
        )
    for size in [] if local_size is None else [local_size]:
        for p in geom.patch_size:
            if size % p:
                raise ValueError(f"{name}: local_crops_size {size} is not a multiple of patch_size {p}; use "
                                 f"{max(p, size - size % p)} or {size - size % p + p}")
    return geom
