"""Config checks that need no torch, run before anything is imported or built (each a one-line SslabError).

:func:`check_config` runs in ``sslab.main`` right after the command line is parsed, and again in
:func:`sslab.engine.train.validate` for runs started from Python.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from typing import Any

from .errors import SslabError


def expected_world_size() -> int:
    """The process count the launcher asked for (torchrun / accelerate / SLURM-via-torchrun env)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_mask_ratio(mask_ratio: float, num_patches: int, what: str = "") -> None:
    """MAE needs at least one removed patch (the loss averages over them) and one visible patch
    (the encoder's input); ``int(L * (1 - ratio))`` patches stay visible, as in the official code."""
    if not 0.0 <= mask_ratio < 1.0:
        raise SslabError(f"mask_ratio {mask_ratio} is outside [0, 1); pass --mask-ratio 0.75 (the MAE paper's)")
    kept = int(num_patches * (1 - mask_ratio))
    of = f"{num_patches} {what or 'patches'}"
    if kept >= num_patches:
        raise SslabError(f"mask_ratio {mask_ratio} removes none of the {of} (keeps {kept}), so the loss has "
                         f"nothing to average; pass a --mask-ratio of at least {1 / num_patches:.3g}, e.g. 0.75")
    if kept < 1:
        raise SslabError(f"mask_ratio {mask_ratio} keeps none of the {of} visible (int({num_patches} x "
                         f"{1 - mask_ratio:.3g}) = 0); pass a --mask-ratio of at most "
                         f"{1 - 1 / num_patches:.3g}, e.g. 0.75")


def vit_patch_size(model: str, patch_size: int | None) -> int | None:
    """Patch side of a timm ViT from the config alone, or None when that needs the model (Swin, no ``patchN``)."""
    if "swin" in model:
        return None  # masking units are last-stage tokens; checked on the built model (branches/mae.py)
    if patch_size is None:
        m = re.search(r"patch(\d+)", model)
        patch_size = int(m.group(1)) if m else None
    return patch_size if patch_size and patch_size > 0 else None


def check_batch(cfg: Any, world: int) -> None:
    """The global batch must give every process at least one image per step."""
    if cfg.effective_batch_size is not None and cfg.effective_batch_size < world * cfg.batch_size:
        if cfg.effective_batch_size < world:
            raise SslabError(
                f"effective_batch_size {cfg.effective_batch_size} is smaller than the {world} processes, each of "
                f"which needs at least one image per step; pass --effective-batch-size {world} or more, or start "
                f"{cfg.effective_batch_size} process(es)")
        raise SslabError(
            f"effective_batch_size {cfg.effective_batch_size} is smaller than batch_size {cfg.batch_size} x {world} "
            f"processes = {cfg.batch_size * world}; pass --batch-size {max(1, cfg.effective_batch_size // world)} "
            "or a larger --effective-batch-size")


def _fixed_tuple_len(tp: Any) -> int | None:
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis:
            return len(args)
    return None


def check_config(cfg: Any) -> None:
    """Everything about ``cfg`` that can be checked without torch, the data or the model."""
    if cfg.data is None or (isinstance(cfg.data, str) and not cfg.data.strip()):
        raise SslabError("--data is required: this recipe is meant for your own images; pass --data "
                         "/path/to/images (an ImageFolder tree root/<class>/<image>, a .tar of one, or 'demo')")
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):  # a recipe can set any value; the command line already checked its own
        n = _fixed_tuple_len(hints[f.name])
        v = getattr(cfg, f.name)
        if n is not None and (not isinstance(v, (tuple, list)) or len(v) != n):
            raise SslabError(f"{f.name} must have {n} values, got {v!r}; e.g. --{f.name.replace('_', '-')} "
                             f"{','.join(str(x) for x in f.default)}")  # fixed-length tuples have tuple defaults
    if not isinstance(cfg.model_kwargs, dict):
        raise SslabError(f"model_kwargs must be a dict, got {cfg.model_kwargs!r}; e.g. --model-kwargs '{{\"depth\": 6}}'")
    if cfg.in_chans not in (1, 3):
        raise SslabError(f"in_chans {cfg.in_chans} is not supported: images are loaded as grayscale (1) or RGB (3); "
                         "pass --in-chans 1 or --in-chans 3")
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for name in ("crop_scale", "global_crops_scale", "local_crops_scale"):
        lo, hi = getattr(cfg, name)
        if not 0 < lo <= hi <= 1:
            raise SslabError(f"{name} {lo},{hi} is not a (min,max) area range with 0 < min <= max <= 1; "
                             f"e.g. --{name.replace('_', '-')} {','.join(str(x) for x in defaults[name])}")
    b1, b2 = cfg.betas
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise SslabError(f"betas {b1},{b2} must each be in [0, 1); e.g. --betas 0.9,0.95")
    if cfg.method == "mae":
        p = vit_patch_size(cfg.model, cfg.patch_size)
        if p is not None and cfg.img_size >= p:
            check_mask_ratio(cfg.mask_ratio, (cfg.img_size // p) ** 2, f"patches ({cfg.img_size} px / patch {p})")
        elif not 0.0 <= cfg.mask_ratio < 1.0:
            check_mask_ratio(cfg.mask_ratio, 1)
    check_batch(cfg, expected_world_size())
