"""Backbone + DINO head over a list of crops of several resolutions (official ``utils.MultiCropWrapper``)."""

from __future__ import annotations

import torch
from torch import nn


def resolution_groups(crops: list[torch.Tensor]) -> list[tuple[int, int]]:
    """[(start, end)) index ranges of consecutive crops with the same (H, W)."""
    groups, start = [], 0
    for i in range(1, len(crops) + 1):
        if i == len(crops) or crops[i].shape[-2:] != crops[start].shape[-2:]:
            groups.append((start, i))
            start = i
    return groups


class MultiCropWrapper(nn.Module):
    """Runs the backbone once per resolution, then the head once on all embeddings.

    ``backbone`` maps (N, C, H, W) to pooled embeddings (N, D) (a timm model with ``num_classes=0``,
    ``dynamic_img_size=True`` so ViT position embeddings are interpolated for small crops).
    Input: a tensor (B, C, H, W) or a list of V crops, each (B, C, H_v, W_v), global crops first.
    Output: (V*B, out_dim), crop-major (rows ``v*B:(v+1)*B`` are crop ``v``), as the official
    wrapper, so ``DINOLoss`` can ``chunk`` it by crop.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the backbone's blocks (timm's ``set_grad_checkpointing``); the
        head is small next to them and runs as usual."""
        if not hasattr(self.backbone, "set_grad_checkpointing"):
            raise ValueError(f"{type(self.backbone).__name__} has no set_grad_checkpointing; "
                             "use a timm backbone or turn grad_checkpointing off")
        self.backbone.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor | list[torch.Tensor], return_embeddings: bool = False):
        """Head outputs (V*B, out_dim); with ``return_embeddings`` also the backbone's (V*B, D)."""
        crops = x if isinstance(x, (list, tuple)) else [x]
        feats = []
        for start, end in resolution_groups(crops):
            out = self.backbone(torch.cat(crops[start:end]))
            feats.append(out[0] if isinstance(out, tuple) else out)
        emb = torch.cat(feats) if len(feats) > 1 else feats[0]
        logits = self.head(emb)
        return (logits, emb) if return_embeddings else logits
