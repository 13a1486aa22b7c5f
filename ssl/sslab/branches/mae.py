"""MAE branch: augmented image -> per-sample seeded mask -> MAE forward -> reconstruction loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..checks import check_mask_ratio
from ..config import Config, encoder_kwargs
from ..data.in_memory import InMemoryImages
from ..data.seeding import sample_uniform
from ..data.transforms import MAECrop, mae_transform, mae_views
from ..models.execution import choose_attention_kernel, compile_in_place, set_grad_checkpointing
from ..models.mae import create_mae
from ..models.swin_mae import create_swin_mae, is_timm_swin


def mae_model_kwargs(cfg: Config) -> dict[str, Any]:
    """The ``create_mae`` keywords a config asks for."""
    return dict(encoder_kwargs(cfg), norm_pix_loss=cfg.norm_pix_loss, decoder_embed_dim=cfg.decoder_embed_dim,
                decoder_depth=cfg.decoder_depth, decoder_num_heads=cfg.decoder_num_heads)


class MAEBranch:
    """Masked-autoencoder pretraining (He et al. 2021) on a timm ViT or Swin (GreenMIM-style units)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        if is_timm_swin(cfg.model):  # masking units are last-stage tokens; see models/swin_mae.py
            self.model = create_swin_mae(cfg.model, mode=cfg.swin_mae_mode, **mae_model_kwargs(cfg))
        else:
            self.model = create_mae(cfg.model, **mae_model_kwargs(cfg))
        self.source_images: torch.Tensor | None = None  # in-memory uint8 images cropped on the device
        self.device_images: torch.Tensor | None = None
        set_grad_checkpointing(self.model, cfg.grad_checkpointing)
        if cfg.compile:  # model and loss: the loss is computed inside the MAE forward
            compile_in_place(self.model)
        # A Swin's masking units are known only now (the config-level check covers plain ViTs).
        check_mask_ratio(cfg.mask_ratio, self.model.num_patches, "masking units")

    def transform(self, source=None):
        """RandomResizedCrop(scale 0.2-1, bicubic) + flip + normalise.

        With ``augment_on_device`` the loader only cuts uint8 crops (or, for an in-memory ``source``,
        draws the boxes: its images go to the device in :meth:`setup`) and :meth:`loss` normalises.
        """
        c = self.cfg
        if not c.augment_on_device:
            return mae_transform(c.img_size, c.mean, c.std, tuple(c.crop_scale))
        in_memory = isinstance(source, InMemoryImages)
        self.source_images = source.images if in_memory else None
        return MAECrop(c.img_size, tuple(c.crop_scale), boxes_only=in_memory)

    def views(self, batch) -> torch.Tensor:
        """The batch's normalised images (B, C, S, S) on the device, whatever the data path."""
        imgs, _, index, _ = batch
        if not self.cfg.augment_on_device:
            return imgs
        return mae_views(imgs, self.cfg.mean, self.cfg.std, self.device_images, index, self.cfg.img_size)

    def no_weight_decay(self) -> set[str]:
        return self.model.no_weight_decay()

    def loss(self, model: nn.Module, batch, epoch: int, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """MAE loss on one micro-batch; the mask noise is drawn per sample from (seed, epoch, index)."""
        imgs, index = self.views(batch), batch[2]
        noise = sample_uniform(self.cfg.seed, epoch, index, self.model.num_patches, "mask").to(imgs.device)
        loss, _, _ = model(imgs, mask_ratio=self.cfg.mask_ratio, noise=noise)
        return loss, {}

    def setup(self, device: torch.device, steps_per_epoch: int, mixed_precision: str = "no") -> None:
        """In-memory images cropped on the device go there (uint8); the attention kernel for this device
        and precision (:func:`~sslab.models.execution.choose_attention_kernel`); nothing to schedule."""
        choose_attention_kernel(self.model, device.type, mixed_precision)
        if self.source_images is not None:
            self.device_images = self.source_images.to(device)

    def before_step(self, model: nn.Module, step: int, epoch: int) -> None:
        """Nothing to change in MAE gradients before the optimiser step."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Nothing to do after an MAE optimiser step."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
