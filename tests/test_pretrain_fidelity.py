"""MAE and SimMIM pretraining as the official code computes it: MAE's weight-decay groups, GreenMIM's init of
the Swin MAE, and the SimMIM baseline (one-layer head, L1 on masked pixels, its mask and recipe)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from sslab.branches.mae import MAEBranch
from sslab.config import Config
from sslab.models.swin_mae import create_swin_mae
from sslab.optim import adamw

ROOT = Path(__file__).resolve().parents[1]


def load_recipe(name: str) -> Config:
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CONFIG


def tiny_swin(mode: str, **kw):
    """A 2-stage Swin (patch 4, window 4) on 32 px images: 8 x 8 then 4 x 4 tokens, 16 units of 8 px."""
    args = dict(img_size=32, patch_size=4, window_size=4, depths=(2, 2), num_heads=(2, 4), embed_dim=16,
                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    args.update(kw)
    return create_swin_mae("swin_tiny_patch4_window7_224", mode=mode, **args)


# --- MAE ViT: the official parameter groups -------------------------------------------------------------

def test_mae_pretraining_decays_everything_but_1d_parameters_and_biases():
    """Official main_pretrain.py: timm's add_weight_decay(model, wd) with no skip list."""
    cfg = Config(method="mae", model="vit_tiny_patch16_224", model_kwargs={"depth": 1}, img_size=32, patch_size=8,
                 decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    branch = MAEBranch(cfg)
    opt = adamw(branch.model, 1e-3, 0.05, (0.9, 0.95), branch.no_weight_decay())  # what the engine builds
    by_wd = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    named = [(n, p) for n, p in branch.model.named_parameters() if p.requires_grad]
    official_decay = {id(p) for n, p in named if not (p.ndim == 1 or n.endswith(".bias"))}
    official_no_decay = {id(p) for n, p in named} - official_decay
    assert by_wd[0.05] == official_decay and by_wd[0.0] == official_no_decay
    names = {id(p): n for n, p in named}
    assert {"cls_token", "mask_token"} <= {names[i] for i in by_wd[0.05]}
    assert not branch.model.pos_embed.requires_grad and not branch.model.decoder_pos_embed.requires_grad


# --- Swin MAE (visible): GreenMIM's initialisation ----------------------------------------------------

def xavier_bound(w: torch.Tensor) -> float:
    fan_out, fan_in = w.shape[0], w[0].numel()
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_visible_swin_mae_is_initialised_as_greenmim():
    torch.manual_seed(0)
    model = tiny_swin("visible", embed_dim=32, num_heads=(2, 4))
    checked = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or name == "patch_embed.proj":
            w, bound = m.weight.detach(), xavier_bound(m.weight)
            # xavier-uniform: |w| <= bound, std bound / sqrt(3) (timm's trunc-normal 0.02 has neither)
            assert w.abs().max() <= bound + 1e-7, name
            assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.15, (name, w.std().item(), bound)
            if isinstance(m, nn.Linear):  # GreenMIM zeroes linear biases; the conv keeps PyTorch's bias init
                assert m.bias is None or not m.bias.any(), name
            checked += 1
        elif isinstance(m, nn.LayerNorm):
            assert torch.all(m.weight == 1) and not m.bias.any(), name
    assert checked >= 2 * 4 + 4  # qkv, proj, fc1, fc2 of 4 blocks, merge, decoder, patch projection
    tables = [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]
    assert tables and all(0.01 < t.std().item() < 0.03 for t in tables)  # timm's trunc-normal 0.02, as GreenMIM


# --- Swin mask_token: SimMIM ------------------------------------------------------------------------------

def direct_simmim(model, imgs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SimMIM written out on ``model``'s weights: mask tokens, timm's stages, 1x1 conv, pixel shuffle, L1.

    ``mask`` (N, U), 1 = masked unit. Pixel shuffle by its definition: out[c, h*u + i, w*u + j] =
    in[c*u*u + i*u + j, h, w].
    """
    n, c = imgs.shape[:2]
    gh, gw = model.grid_size
    x = model.patch_embed(imgs)  # (N, H0, W0, D0)
    t = x.shape[1] // gh  # tokens per unit side at stage 0
    w = mask.view(n, gh, gw).repeat_interleave(t, 1).repeat_interleave(t, 2)[..., None]
    x = x * (1 - w) + model.input_mask_token[0] * w
    z = model.norm(model.layers(x))  # (N, gh, gw, D)
    conv = model.simmim_head[0]
    y = torch.einsum("nhwd,kd->nhwk", z, conv.weight[:, :, 0, 0]) + conv.bias
    u = imgs.shape[-1] // gw
    rec = rearrange(y, "n h w (c i j) -> n c (h i) (w j)", c=c, i=u, j=u)
    pix = mask.to(imgs.dtype).view(n, 1, gh, gw).repeat_interleave(u, 2).repeat_interleave(u, 3)
    loss = (torch.abs(imgs - rec) * pix).sum() / (pix.sum() + 1e-5) / c
    return loss, rec


def test_mask_token_mode_is_simmim():
    torch.manual_seed(0)
    model = tiny_swin("mask_token").double()
    assert not any(k.startswith("decoder_") or k == "mask_token" for k in model.state_dict())
    imgs = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    noise = torch.rand(3, 16, dtype=torch.float64)
    loss, pred, mask = model(imgs, mask_ratio=0.6, noise=noise)
    assert (mask.sum(1) == math.ceil(16 * 0.6)).all()  # SimMIM's MaskGenerator: ceil(units x ratio) masked
    want_loss, want_rec = direct_simmim(model, imgs, mask)
    torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.unpatchify(pred), want_rec, rtol=1e-10, atol=1e-12)
    loss.backward()
    assert model.simmim_head[0].weight.grad.abs().sum() > 0 and model.input_mask_token.grad.abs().sum() > 0


def test_simmim_masks_like_its_mask_generator_at_its_resolution():
    """192 px, 32 px mask patches (the Swin's last-stage unit for patch 4), ratio 0.6: 22 of 36 masked."""
    model = create_swin_mae("swin_tiny_patch4_window7_224", mode="mask_token", img_size=192, window_size=6,
                            depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), embed_dim=8)
    assert model.patch_size == (32, 32) and model.num_patches == 36
    _, _, mask = model(torch.randn(2, 3, 192, 192), mask_ratio=0.6)
    assert (mask.sum(1) == math.ceil(36 * 0.6)).all()


# SimMIM's pretraining config (configs/swin_base__100ep/simmim_pretrain__swin_base__img192_window6__100ep.yaml
# over config.py's defaults; README: 16 GPUs x --batch-size 128), lr scaled by batch / 512 in main_simmim.py.
SIMMIM_SWIN_B_100EP = dict(IMG_SIZE=192, WINDOW_SIZE=6, MASK_PATCH_SIZE=32, MASK_RATIO=0.6, EPOCHS=100,
                           WARMUP_EPOCHS=10, BASE_LR=2e-4, MIN_LR=1e-5, WEIGHT_DECAY=0.05, BETAS=(0.9, 0.999),
                           CLIP_GRAD=5.0, DROP_PATH_RATE=0.0, BATCH=128 * 16, CROP_SCALE=(0.67, 1.0))


def test_simmim_recipe_is_simmims_config():
    cfg, o = load_recipe("simmim_swint"), SIMMIM_SWIN_B_100EP
    assert cfg.method == "mae" and cfg.swin_mae_mode == "mask_token"
    assert cfg.img_size == o["IMG_SIZE"] and cfg.model_kwargs["window_size"] == o["WINDOW_SIZE"]
    assert cfg.mask_ratio == o["MASK_RATIO"] and cfg.model_kwargs["drop_path_rate"] == o["DROP_PATH_RATE"]
    assert cfg.epochs == o["EPOCHS"] and cfg.warmup_epochs == o["WARMUP_EPOCHS"]
    assert cfg.effective_batch_size == o["BATCH"]
    lr = cfg.base_lr * cfg.effective_batch_size / 256  # ours scales by / 256, SimMIM's by / 512
    assert math.isclose(lr, o["BASE_LR"] * o["BATCH"] / 512)
    assert math.isclose(cfg.min_lr, o["MIN_LR"] * o["BATCH"] / 512)
    assert cfg.weight_decay == o["WEIGHT_DECAY"] and tuple(cfg.betas) == o["BETAS"]
    assert cfg.clip_grad == o["CLIP_GRAD"] and cfg.clip_grad_mode == "global"
    assert tuple(cfg.crop_scale) == o["CROP_SCALE"]
    model = create_swin_mae(cfg.model, mode="mask_token", img_size=cfg.img_size, **cfg.model_kwargs)
    assert model.patch_size == (o["MASK_PATCH_SIZE"],) * 2  # the masking unit is SimMIM's mask patch
