"""The encoder inside a run: rebuild the timm model a checkpoint trained and pull its weights out.

This is the contract every downstream user of a checkpoint (export, evaluators, pictures) relies
on: ``build_encoder(config)`` gives the bare timm model (``num_classes=0``) with the run's
architecture, and ``encoder_state_dict(checkpoint)`` gives its weights in timm's own key layout,
so ``build_encoder(cfg).load_state_dict(encoder_state_dict(ckpt))`` is strict.
"""

from __future__ import annotations

import os
from typing import Any

import timm
import torch
from torch import nn

from .config import encoder_kwargs
from .engine.checkpoint import load_checkpoint

# Keys of an MAE model that belong to the MAE task, not to the encoder. A Swin MAE keeps timm's Swin keys at the
# top level like the ViT MAE; its "mask_token" mode adds the encoder-input token "input_mask_token".
MAE_ONLY_PREFIXES = ("mask_token", "decoder_", "input_mask_token", "simmim_head.")


def encoder_spec(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(timm name, create_model kwargs) of the encoder described by a run config dict."""
    kwargs = encoder_kwargs(config)
    kwargs.pop("drop_path_rate", None)  # a training-time regulariser, not part of the architecture
    return config["model"], kwargs


def build_encoder(config: dict[str, Any], **overrides: Any) -> nn.Module:
    """A randomly initialised timm encoder (no classifier) with the architecture of the run."""
    name, kwargs = encoder_spec(config)
    kwargs.update(overrides)
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def encoder_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder weights of an sslab checkpoint, in the timm model's key layout.

    MAE: the model's keys minus the decoder and mask token. Other methods add their rule here.
    """
    method = checkpoint["config"]["method"]
    if method == "mae":
        return {k: v for k, v in checkpoint["model"].items() if not k.startswith(MAE_ONLY_PREFIXES)}
    if method == "dino":  # the EMA teacher's backbone is the encoder DINO evaluates and releases
        return {k.removeprefix("backbone."): v for k, v in checkpoint["branch"]["teacher"].items()
                if k.startswith("backbone.")}
    raise ValueError(f"no encoder extraction rule for method {method!r}")


def encoder_from_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Load an sslab training checkpoint (weights only) and return its encoder as a timm model, in eval mode."""
    ckpt = load_checkpoint(path)
    model = build_encoder(ckpt["config"])
    model.load_state_dict(encoder_state_dict(ckpt), strict=True)
    return model.eval()
