"""Masked autoencoder on a timm ViT (He et al. 2021, arXiv 2111.06377, Sec. 3 and Fig. 1).

The encoder is any timm ``VisionTransformer`` with a class token; its patch embedding, class
token, blocks and final norm are held at the top level of this module so that the state dict
has the key layout of the official release (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
``blocks.N.*``, ``norm.*``, ``mask_token``, ``decoder_*``): ``mae_pretrain_vit_base.pth`` and
``mae_visualize_vit_base.pth`` load into ``create_mae("vit_base_patch16_224")``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import timm
import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ..losses.mae_loss import mae_loss
from .masking import gather_tokens, random_masking
from .patches import patchify, unpatchify
from .pos_embed import sincos_2d

# Options that belong to the MAE wrapper; everything else goes to timm.create_model.
MAE_OPTIONS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads", "decoder_mlp_ratio", "norm_pix_loss")


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)  # type: ignore[return-value]


def build_vit(encoder_name: str, **timm_kwargs: Any) -> VisionTransformer:
    """Create a randomly initialised timm ViT encoder (no head), checking it suits MAE."""
    if encoder_name not in timm.list_models():
        close = timm.list_models(f"*{encoder_name.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm model {encoder_name!r}; similar names: {close}")
    img = timm_kwargs.get("img_size")
    patch = timm_kwargs.get("patch_size")
    if img is not None and patch is not None:
        for i, p in zip(_pair(img), _pair(patch)):
            if i % p:
                raise ValueError(
                    f"img_size {img} is not a multiple of patch_size {patch}; "
                    f"choose an image size divisible by the patch size (e.g. {i - i % p or p})"
                )
    model = timm.create_model(encoder_name, pretrained=False, num_classes=0, **timm_kwargs)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{encoder_name!r} is a {type(model).__name__}, not a timm VisionTransformer")
    if model.cls_token is None or model.num_prefix_tokens != 1 or model.pos_embed is None:
        raise ValueError(
            f"{encoder_name!r} must have exactly one class token and absolute position embeddings "
            "(no register tokens) to be an MAE encoder"
        )
    return model


class MaskedAutoencoderViT(nn.Module):
    """MAE: ViT encoder on the visible patches, light ViT decoder that predicts pixels.

    ``forward(imgs (N, C, H, W), mask_ratio, noise (N, L) | None)`` returns
    ``(loss, pred (N, L, p*p*C), mask (N, L) with 1 = removed)``.
    """

    def __init__(
        self,
        vit: VisionTransformer,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        decoder_mlp_ratio: float = 4.0,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        pe = vit.patch_embed
        self.patch_size = _pair(pe.patch_size)
        self.grid_size = _pair(pe.grid_size)
        self.in_chans = pe.proj.in_channels
        self.img_size = (self.grid_size[0] * self.patch_size[0], self.grid_size[1] * self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim = embed_dim = vit.embed_dim
        self.norm_pix_loss = norm_pix_loss
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        # Encoder: the timm ViT's own modules, at the official key names.
        self.patch_embed = pe
        self.cls_token = vit.cls_token
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = vit.blocks
        self.norm = vit.norm

        # Decoder.
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, self.num_patches + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, decoder_mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size[0] * self.patch_size[1] * self.in_chans)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Official MAE init: sin-cos positions, xavier-uniform linears and patch embedding, N(0, .02) tokens."""
        self.pos_embed.data.copy_(sincos_2d(self.embed_dim, self.grid_size, cls_token=True)[None])
        self.decoder_pos_embed.data.copy_(
            sincos_2d(self.decoder_pos_embed.shape[-1], self.grid_size, cls_token=True)[None]
        )
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear layer, not a conv
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_linear_and_norm)

    def no_weight_decay(self) -> set[str]:
        """Names kept out of weight decay besides 1-D parameters and biases: none in pretraining.

        The official ``main_pretrain.py`` builds its groups with timm's ``add_weight_decay`` and no skip
        list, so ``cls_token`` and ``mask_token`` (1, 1, D) are decayed; the fixed sin-cos positions are
        frozen and in no group. (Fine-tuning keeps its own rules: :mod:`sslab.eval.finetune`.)
        """
        return set()

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*q*C), pixel order (p, q, c) as in the official code."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*q*C) -> (N, C, H, W), the inverse of :meth:`patchify`."""
        return unpatchify(x, self.patch_size, self.grid_size)

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches: returns latent (N, 1+K, D), mask (N, L), ids_restore (N, L)."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        m = random_masking(x.shape[0], x.shape[1], mask_ratio, noise, device=x.device)
        x = gather_tokens(x, m.ids_keep)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = self.norm(self.blocks(torch.cat([cls, x], dim=1)))
        return x, m.mask, m.ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Add mask tokens, unshuffle, decode: (N, 1+K, D) -> (N, L, p*q*C)."""
        x = self.decoder_embed(latent)
        n, L = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, L + 1 - x.shape[1], -1)
        x_ = gather_tokens(torch.cat([x[:, 1:, :], mask_tokens], dim=1), ids_restore)
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MAE loss of ``pred`` against the patches of ``imgs``, removed patches only."""
        return mae_loss(pred, self.patchify(imgs), mask, self.norm_pix_loss)

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(loss, pred (N, L, p*q*C), mask (N, L))``."""
        if imgs.shape[-2:] != self.img_size or imgs.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (N, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}), "
                f"got {tuple(imgs.shape)}; set img_size/in_chans to match the data"
            )
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        """All tokens through the encoder, no masking: (N, C, H, W) -> (N, 1+L, D)."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        return self.norm(self.blocks(torch.cat([cls, x], dim=1)))


def _init_linear_and_norm(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def create_mae(encoder_name: str = "vit_base_patch16_224", **overrides: Any) -> MaskedAutoencoderViT:
    """Build an MAE on the timm ViT ``encoder_name``.

    MAE options (``decoder_embed_dim=512``, ``decoder_depth=8``, ``decoder_num_heads=16``,
    ``decoder_mlp_ratio=4``, ``norm_pix_loss=True``) are taken here; every other keyword
    (``img_size``, ``patch_size``, ``in_chans``, ``depth``, ...) goes to ``timm.create_model``.
    """
    mae_kwargs = {k: overrides.pop(k) for k in MAE_OPTIONS if k in overrides}
    dec_dim = mae_kwargs.get("decoder_embed_dim", 512)
    dec_heads = mae_kwargs.get("decoder_num_heads", 16)
    if dec_dim % dec_heads:
        raise ValueError(f"decoder_embed_dim {dec_dim} is not divisible by decoder_num_heads {dec_heads}")
    vit = build_vit(encoder_name, **overrides)
    if vit.embed_dim % 4:
        raise ValueError(f"embed_dim {vit.embed_dim} must be divisible by 4 for 2-D sin-cos positions")
    model = MaskedAutoencoderViT(vit, **mae_kwargs)
    model.encoder_name = encoder_name
    model.encoder_kwargs = dict(overrides)
    return model
