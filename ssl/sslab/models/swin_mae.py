"""Masked autoencoder on a timm Swin, with an encoder that computes only the visible tokens.

Masking (GreenMIM, Huang et al. 2022, arXiv 2205.13515, Sec. 3.1; UM-MAE, Li et al. 2022,
arXiv 2205.10063): the masking unit is one token of the last stage (32 px for patch 4 and three
patch merges), drawn per sample with MAE's ``random_masking``. A unit is a whole square of tokens
at every stage, so patch merging never mixes visible and removed tokens.

Encoder modes (``mode``):

* ``"visible"`` (default): only the visible tokens are computed. By definition it equals, on the
  visible tokens, timm's Swin forward in which removed tokens are excluded from every window's
  attention keys (and from patch merging, which units guarantee). Each block gathers the visible
  tokens of each window timm would form (cyclic shift included) into a row padded to the largest
  count, masks the padding keys with ``-inf``, adds timm's relative position bias of the tokens'
  real places and timm's ``-100`` shift-region mask, and scatters the result back. Linear layers,
  norms and MLPs run on the visible tokens only; windows without a visible token are dropped.
  The modules and parameters are timm's own (``patch_embed``, ``layers[i].downsample``,
  ``layers[i].blocks[j]``, ``norm``); only the forward over them is ours.
  The decoder is MAE's (He et al. 2021, Sec. 3), on last-stage units: the visible units' encodings
  plus a shared ``mask_token``, fixed 2-D sin-cos positions over the unit grid, a few ViT blocks
  (GreenMIM: 512-d, 1 block) and a linear head predicting each unit's pixels; the loss is MAE's
  (per-unit normalised pixels, removed units only). Initialisation is GreenMIM's
  (``base_green_models.MaskedAutoencoder.initialize_weights``): every linear layer of encoder and
  decoder xavier-uniform with zero bias, the patch projection xavier-uniform as a linear layer,
  LayerNorms 1 / 0, ``mask_token`` N(0, 0.02); the relative position bias tables keep timm's
  trunc-normal 0.02.
* ``"mask_token"``: SimMIM (Xie et al. 2022, arXiv 2111.09886, Sec. 3; official ``models/simmim.py``),
  the baseline the visible-only encoder is compared with: removed tokens are replaced by a learned
  ``input_mask_token`` (trunc-normal 0.02) after the patch embedding, timm's forward runs on all
  tokens, and the one-layer prediction head (a 1x1 convolution to ``unit_px**2 * C`` channels and a
  pixel shuffle by ``unit_px``, the encoder's stride) predicts the normalised image; the loss is L1 on
  the masked pixels (:func:`~sslab.losses.simmim_loss.simmim_loss`). No decoder, no norm-pix target
  (``norm_pix_loss`` and the ``decoder_*`` options are not used); the encoder keeps timm's init,
  which is SimMIM's Swin init. SimMIM's mask (32 px patches, ratio 0.6, ``ceil`` of the masked
  count) is this model's unit masking at ``mask_ratio=0.6`` for patch 4 and 4 stages.

State-dict keys: the encoder's at the top level with timm's names (``patch_embed.*``,
``layers.*``, ``norm.*``); MAE-only keys are ``mask_token`` and ``decoder_*`` (``visible``) or
``input_mask_token`` and ``simmim_head.*`` (``mask_token``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, WindowAttention
from timm.models.vision_transformer import Block
from torch import nn

from ..losses.mae_loss import mae_loss
from ..losses.simmim_loss import simmim_loss
from .mae import MAE_OPTIONS, _init_linear_and_norm
from .masking import Masking, gather_tokens, random_masking
from .patches import patchify, unpatchify
from .pos_embed import sincos_2d
from .swin_geometry import SwinGeometry, create_swin, is_timm_swin  # noqa: F401 (re-exported)

MODES = ("visible", "mask_token")
SWIN_MAE_OPTIONS = MAE_OPTIONS + ("mode",)


# ----------------------------------------------------------------------------------------------
# Visible-token window attention over timm's modules
# ----------------------------------------------------------------------------------------------

class WindowPlan(NamedTuple):
    """Where one stage's visible tokens sit in the windows of blocks with a given shift.

    The W windows holding at least one visible token are kept; each lists its visible tokens first
    (in place order), padded to M, the largest count. ``gather`` (W*M,): the packed-token row
    (of N*T) at each slot; padding slots repeat row 0, harmless since they are masked as keys and
    their query rows are dropped. ``scatter`` (N*T,): each token's slot. ``rel_index`` (W*M*M,):
    timm's ``relative_position_index`` at the slots' real places in the window. ``mask``
    (W, 1, M, M): ``-inf`` on padding keys plus timm's shift-region mask (-100 between tokens that
    the cyclic shift brought together from different regions).
    """

    gather: torch.Tensor
    scatter: torch.Tensor
    rel_index: torch.Tensor
    mask: torch.Tensor


def window_plan(rows: torch.Tensor, cols: torch.Tensor, grid: tuple[int, int], window: tuple[int, int],
                shift: tuple[int, int], rel_index: torch.Tensor, region_mask: torch.Tensor | None,
                dtype: torch.dtype) -> WindowPlan:
    """Plan the windows of the tokens at (rows, cols), both (N, T) on a ``grid`` token map.

    timm rolls the map by ``-shift`` and then cuts ``window``-sized windows in row-major order
    (``window_partition``); this computes each token's window and place from its coordinates.
    ``rel_index`` (A, A) is the blocks' ``relative_position_index``, ``region_mask`` (nW, A, A)
    their ``attn_mask`` (None without shift).
    """
    n, t = rows.shape
    dev = rows.device
    (gh, gw), (wh, ww), (sh, sw) = grid, window, shift
    r, c = (rows - sh) % gh, (cols - sw) % gw  # position after torch.roll(x, -shift)
    per_row = gw // ww
    num_win, area = (gh // wh) * per_row, wh * ww
    win = ((r // wh) * per_row + c // ww + torch.arange(n, device=dev)[:, None] * num_win).reshape(-1)
    place = ((r % wh) * ww + c % ww).reshape(-1)
    order = torch.argsort(win * area + place)  # tokens grouped by window, in place order
    counts = torch.bincount(win, minlength=n * num_win)
    kept = counts.nonzero().squeeze(1)  # windows holding a visible token (sample-major, timm's order)
    m = int(counts.max())
    row_of = torch.full((n * num_win,), -1, dtype=torch.long, device=dev)
    row_of[kept] = torch.arange(kept.numel(), device=dev)
    win_sorted = win[order]
    rank = torch.arange(n * t, device=dev) - (torch.cumsum(counts, 0) - counts)[win_sorted]
    slot_sorted = row_of[win_sorted] * m + rank
    gather = torch.zeros(kept.numel() * m, dtype=torch.long, device=dev)
    gather[slot_sorted] = order
    scatter = torch.empty(n * t, dtype=torch.long, device=dev)
    scatter[order] = slot_sorted
    valid = torch.zeros(kept.numel() * m, dtype=torch.bool, device=dev)
    valid[slot_sorted] = True
    place_of = torch.zeros(kept.numel() * m, dtype=torch.long, device=dev)
    place_of[slot_sorted] = place[order]
    pi, pj = place_of.view(-1, m, 1), place_of.view(-1, 1, m)
    mask = torch.zeros(kept.numel(), 1, m, m, dtype=dtype, device=dev)
    mask = mask.masked_fill(~valid.view(-1, 1, 1, m), float("-inf"))
    if region_mask is not None:
        mask = mask + region_mask.to(dtype)[(kept % num_win)[:, None, None], pi, pj][:, None]
    return WindowPlan(gather, scatter, rel_index[pi, pj].reshape(-1), mask)


def visible_window_attention(attn: WindowAttention, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """timm's ``WindowAttention`` on packed visible tokens: (N*T, C) -> (N*T, C)."""
    w, _, m, _ = plan.mask.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).index_select(0, plan.gather)  # (W*M, 3*C'); index_select: its backward is index_add
    qkv = qkv.view(w, m, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (W, heads, M, head_dim)
    # relative position bias of the real places: (W, heads, M, M), as timm's _get_rel_pos_bias per window
    bias = attn.relative_position_bias_table.index_select(0, plan.rel_index).view(w, m, m, heads)
    bias = bias.permute(0, 3, 1, 2).to(q.dtype) + plan.mask.to(q.dtype)
    if attn.fused_attn:  # the same choice of kernel as timm's WindowAttention
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale,
                                             dropout_p=attn.attn_drop.p if attn.training else 0.0)
    else:
        d = q.shape[-1]
        a = torch.baddbmm(bias.reshape(w * heads, m, m), q.reshape(w * heads, m, d),
                          k.reshape(w * heads, m, d).transpose(1, 2), alpha=attn.scale)
        out = attn.attn_drop(a.softmax(dim=-1)) @ v.reshape(w * heads, m, d)
        out = out.view(w, heads, m, d)
    out = out.transpose(1, 2).reshape(w * m, -1).index_select(0, plan.scatter)
    return attn.proj_drop(attn.proj(out))


def visible_block(blk: SwinTransformerBlock, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """timm's ``SwinTransformerBlock.forward`` on packed visible tokens (N, T, C) -> (N, T, C)."""
    n, t, c = x.shape
    x = x + blk.drop_path1(visible_window_attention(blk.attn, blk.norm1(x).reshape(n * t, c), plan).view(n, t, c))
    return x + blk.drop_path2(blk.mlp(blk.norm2(x)))


def _region_mask(blk: SwinTransformerBlock, ref: torch.Tensor) -> torch.Tensor | None:
    if not any(blk.shift_size):
        return None
    if blk.attn_mask is not None:
        return blk.attn_mask
    return blk.get_attn_mask(device=ref.device, dtype=ref.dtype)  # timm's dynamic_mask models


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

class SwinMAE(nn.Module):
    """MAE with a timm Swin encoder; masking unit = one last-stage token.

    ``forward(imgs (N, C, H, W), mask_ratio, noise (N, U) | None)`` returns
    ``(loss, pred (N, U, uh*uw*C), mask (N, U) with 1 = removed)``, U units of ``unit_px`` pixels.
    """

    def __init__(
        self,
        swin: SwinTransformer,
        geometry: SwinGeometry,
        mode: str = "visible",
        decoder_embed_dim: int = 512,
        decoder_depth: int = 1,
        decoder_num_heads: int = 16,
        decoder_mlp_ratio: float = 4.0,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Swin MAE mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.geometry = g = geometry
        self.patch_size = g.unit_px  # the "patch" of the loss and of patchify is the masking unit
        self.grid_size = g.unit_grid
        self.num_patches = g.units
        self.img_size = g.img_size
        self.in_chans = swin.patch_embed.proj.in_channels
        self.embed_dim = swin.num_features
        self.norm_pix_loss = norm_pix_loss if mode == "visible" else False  # SimMIM predicts the image itself

        # Encoder: timm's modules at timm's key names.
        self.patch_embed = swin.patch_embed
        self.layers = swin.layers
        self.norm = swin.norm
        if mode == "mask_token":  # SimMIM: input token and one-layer head; no parameter DDP would see unused
            if self.patch_size[0] != self.patch_size[1]:
                raise ValueError(f"SimMIM's pixel-shuffle head needs square units, got {self.patch_size}")
            self.input_mask_token = nn.Parameter(torch.zeros(1, 1, 1, swin.embed_dim))
            nn.init.trunc_normal_(self.input_mask_token, std=0.02)
            self.simmim_head = nn.Sequential(
                nn.Conv2d(self.embed_dim, self.patch_size[0] ** 2 * self.in_chans, kernel_size=1),
                nn.PixelShuffle(self.patch_size[0]),
            )
            return

        # Decoder (MAE's, without a class token).
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(self.embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, decoder_mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size[0] * self.patch_size[1] * self.in_chans)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """GreenMIM's init (``visible`` mode): xavier-uniform linears (encoder and decoder) and patch
        projection, zero biases, LayerNorm 1 / 0, sin-cos decoder positions, ``mask_token`` N(0, .02)."""
        self.decoder_pos_embed.copy_(sincos_2d(self.decoder_pos_embed.shape[-1], self.grid_size)[None])
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear layer, not a conv
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_linear_and_norm)

    def no_weight_decay(self) -> set[str]:
        """Names kept out of weight decay besides biases and norms (tokens, positions, position biases),
        as GreenMIM's skip list ('token', 'position_bias') and SimMIM's (mask_token, bias tables)."""
        return {"mask_token", "input_mask_token", "decoder_pos_embed", "relative_position_bias_table"}

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, U, uh*uw*C), one row per masking unit, pixel order (p, q, c)."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, U, uh*uw*C) -> (N, C, H, W), the inverse of :meth:`patchify`."""
        return unpatchify(x, self.patch_size, self.grid_size)

    def units_to_tokens(self, mask: torch.Tensor, stage: int) -> torch.Tensor:
        """(N, U) per-unit values -> (N, H_s, W_s) on stage ``stage``'s token grid."""
        u = self.geometry.unit_tokens(stage)
        m = mask.view(mask.shape[0], *self.grid_size)
        return m.repeat_interleave(u, 1).repeat_interleave(u, 2)

    # --- encoder ---

    def encode_visible(self, imgs: torch.Tensor, ids_keep: torch.Tensor,
                       return_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Encode only the units ``ids_keep`` (N, K): -> (N, K, D) after the final norm.

        With ``return_stages`` returns each stage's output instead, (N, K, u_s, u_s, C_s) with
        u_s the unit's side in that stage's tokens (the last one before the final norm).
        """
        g = self.geometry
        n, k = ids_keep.shape
        u = g.unit_tokens(0)
        x = rearrange(self.patch_embed(imgs), "n (gh a) (gw b) c -> n (gh gw) a b c", a=u, b=u)
        x = x[torch.arange(n, device=x.device)[:, None], ids_keep]  # (N, K, u, u, C)
        unit_row, unit_col = ids_keep // g.unit_grid[1], ids_keep % g.unit_grid[1]
        stages = []
        for s, layer in enumerate(self.layers):
            u = g.unit_tokens(s)
            if s > 0:  # a unit's 2x2 merge groups never leave it: timm's PatchMerging on each unit
                x = layer.downsample(x.reshape(n * k, 2 * u, 2 * u, -1)).view(n, k, u, u, -1)
            ar = torch.arange(u, device=x.device)
            rows = (unit_row[:, :, None, None] * u + ar[:, None]).expand(n, k, u, u).reshape(n, -1)
            cols = (unit_col[:, :, None, None] * u + ar[None, :]).expand(n, k, u, u).reshape(n, -1)
            t = x.reshape(n, k * u * u, -1)
            plans: dict[tuple[int, int], WindowPlan] = {}  # blocks of equal shift share a plan
            for blk in layer.blocks:
                key = tuple(blk.shift_size)
                if key not in plans:
                    plans[key] = window_plan(rows, cols, g.grids[s], tuple(blk.window_size), key,
                                             blk.attn.relative_position_index, _region_mask(blk, t), t.dtype)
                t = visible_block(blk, t, plans[key])
            x = t.view(n, k, u, u, -1)
            stages.append(x)
        if return_stages:
            return stages
        return self.norm(x.view(n, k, -1))

    def encode_mask_token(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """SimMIM's encoder as a sequence: -> (N, U, D), one row per last-stage token (unit)."""
        x = self.encode_mask_token_grid(imgs, mask)
        return x.flatten(2).transpose(1, 2)

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        """All tokens, no masking (timm's forward_features): (N, C, H, W) -> (N, U, D)."""
        x = self.norm(self.layers(self.patch_embed(imgs)))
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def encode_mask_token_grid(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """SimMIM's encoder: all tokens, removed ones as ``input_mask_token``: -> (N, D, H_last, W_last)."""
        x = self.patch_embed(imgs)  # (N, H0, W0, C)
        m = self.units_to_tokens(mask, 0).unsqueeze(-1).to(x.dtype)
        x = x * (1 - m) + self.input_mask_token.to(x.dtype) * m
        return self.norm(self.layers(x)).permute(0, 3, 1, 2)

    def forward_simmim(self, imgs: torch.Tensor, m: Masking) -> tuple[torch.Tensor, torch.Tensor]:
        """SimMIM: encode with mask tokens, predict pixels with the 1x1 conv + pixel shuffle head, L1 on
        masked pixels. Returns ``(loss, pred (N, U, uh*uw*C))``."""
        rec = self.simmim_head(self.encode_mask_token_grid(imgs, m.mask))  # (N, C, H, W)
        u = self.patch_size[0]
        pixel_mask = m.mask.view(-1, 1, *self.grid_size).repeat_interleave(u, 2).repeat_interleave(u, 3)
        return simmim_loss(imgs, rec, pixel_mask), self.patchify(rec)

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Masking]:
        """Mask units and encode: returns the visible units' latent (N, K, D) and the masking."""
        m = random_masking(imgs.shape[0], self.num_patches, mask_ratio, noise, device=imgs.device)
        if m.ids_keep.shape[1] == 0:
            raise ValueError(f"mask_ratio {mask_ratio} keeps none of the {self.num_patches} masking units; "
                             "lower it or use more, smaller units (smaller patch_size or fewer stages)")
        if self.mode == "visible":
            return self.encode_visible(imgs, m.ids_keep), m
        return gather_tokens(self.encode_mask_token(imgs, m.mask), m.ids_keep), m

    # --- decoder ---

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Add mask tokens, unshuffle, decode: (N, K, D) -> (N, U, uh*uw*C)."""
        x = self.decoder_embed(latent)
        n, num_units = ids_restore.shape
        x = torch.cat([x, self.mask_token.expand(n, num_units - x.shape[1], -1)], dim=1)
        x = gather_tokens(x, ids_restore) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(loss, pred (N, U, uh*uw*C), mask (N, U))``."""
        if tuple(imgs.shape[-2:]) != self.img_size or imgs.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (N, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}), "
                f"got {tuple(imgs.shape)}; set img_size/in_chans to match the data"
            )
        if self.mode == "mask_token":
            m = random_masking(imgs.shape[0], self.num_patches, mask_ratio, noise, device=imgs.device)
            loss, pred = self.forward_simmim(imgs, m)
            return loss, pred, m.mask
        latent, m = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, m.ids_restore)
        return mae_loss(pred, self.patchify(imgs), m.mask, self.norm_pix_loss), pred, m.mask


def create_swin_mae(encoder_name: str = "swin_tiny_patch4_window7_224", **overrides: Any) -> SwinMAE:
    """Build an MAE on the timm Swin ``encoder_name``.

    Options taken here: ``mode`` ("visible" | "mask_token"), ``decoder_embed_dim=512``,
    ``decoder_depth=1``, ``decoder_num_heads=16`` (GreenMIM's decoder), ``decoder_mlp_ratio=4``,
    ``norm_pix_loss=True``. Every other keyword (``img_size``, ``patch_size``, ``window_size``,
    ``depths``, ``num_heads``, ``embed_dim``, ``in_chans``, ...) goes to ``timm.create_model``;
    ``drop_path_rate`` defaults to 0 (GreenMIM pretrains without stochastic depth; timm's is 0.1).
    Sizes that do not fit are rejected here (:func:`~sslab.models.swin_geometry.validate_swin_geometry`).
    """
    mae_kwargs = {k: overrides.pop(k) for k in SWIN_MAE_OPTIONS if k in overrides}
    dec_dim = mae_kwargs.get("decoder_embed_dim", 512)
    dec_heads = mae_kwargs.get("decoder_num_heads", 16)
    if dec_dim % dec_heads:
        raise ValueError(f"decoder_embed_dim {dec_dim} is not divisible by decoder_num_heads {dec_heads}")
    if dec_dim % 4:
        raise ValueError(f"decoder_embed_dim {dec_dim} must be divisible by 4 for 2-D sin-cos positions")
    if mae_kwargs.get("mode", "visible") not in MODES:
        raise ValueError(f"Swin MAE mode (swin_mae_mode) must be one of {MODES}, got {mae_kwargs['mode']!r}")
    overrides.setdefault("drop_path_rate", 0.0)
    swin, geometry = create_swin(encoder_name, **overrides)
    model = SwinMAE(swin, geometry, **mae_kwargs)
    model.encoder_name = encoder_name
    model.encoder_kwargs = dict(overrides)
    return model
