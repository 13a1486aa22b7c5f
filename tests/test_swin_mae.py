"""MAE on a timm Swin: the visible-token encoder is exact, units align, sizes are checked, runs train and resume."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import timm
import torch
from timm.models.swin_transformer import window_partition

from sslab import Config, train
from sslab.encoders import build_encoder, encoder_state_dict
from sslab.engine.checkpoint import list_checkpoints, load_checkpoint
from sslab.models.masking import random_masking
from sslab.models.swin_geometry import validate_swin_geometry
from sslab.models.swin_mae import create_swin_mae, is_timm_swin

# Key-mask value of the reference: exp(-1e30 + x) is exactly 0 in float64, so removed keys get zero
# weight. (-inf would make windows holding only removed tokens NaN, and 0 * NaN leaks into visible ones.)
EXCLUDED = -1.0e30

# Geometries of the exactness test: windows that straddle units, shifted windows in several stages,
# a window timm clips to the grid, a non-square image and window; and Swin-T's own layout at 224 px.
GEOMETRIES = {
    "rect_48x32_p2_w6x4": dict(img_size=(48, 32), patch_size=2, window_size=(6, 4), depths=(2, 2, 2),
                               num_heads=(2, 2, 4), embed_dim=16),
    "swin_t_layout_224": dict(img_size=224, patch_size=4, window_size=7, depths=(2, 2, 2, 2),
                              num_heads=(1, 2, 2, 4), embed_dim=8),
}


def tiny_swin_mae(mode: str = "visible", **kw):
    args = dict(GEOMETRIES["rect_48x32_p2_w6x4"], decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    args.update(kw)
    return create_swin_mae("swin_tiny_patch4_window7_224", mode=mode, **args)


@contextmanager
def keys_excluded(model, removed_units: torch.Tensor):
    """Patch every block of ``model`` so that removed tokens are excluded from its attention keys.

    ``removed_units`` (N, U) bool. timm's own forward runs unchanged; each ``WindowAttention`` gets
    an extra additive mask (N*nW, A, A) built the way timm builds its windows (roll, partition).
    """
    saved = []
    try:
        for s, layer in enumerate(model.layers):
            removed = model.units_to_tokens(removed_units.float(), s)[..., None]  # (N, H, W, 1)
            for blk in layer.blocks:
                rolled = torch.roll(removed, (-blk.shift_size[0], -blk.shift_size[1]), dims=(1, 2))
                keys = window_partition(rolled, blk.window_size).flatten(1)  # (N*nW, A), window order of timm
                key_mask = (keys * EXCLUDED).to(torch.float64)[:, None, :]
                attn, forward = blk.attn, blk.attn.forward
                saved.append((attn, forward))

                def patched(x, mask=None, forward=forward, key_mask=key_mask):
                    extra = key_mask.to(x.dtype).expand(x.shape[0], x.shape[1], x.shape[1])
                    if mask is not None:  # timm's shift-region mask (nW, A, A), same for every sample
                        extra = extra + mask.repeat(x.shape[0] // mask.shape[0], 1, 1)
                    return forward(x, mask=extra)

                attn.forward = patched
        yield
    finally:
        for attn, forward in saved:
            attn.forward = forward


def reference_stages(model, imgs, removed_units):
    """timm's Swin forward over all tokens with removed keys excluded: each stage's (N, H, W, C) output."""
    outs = []
    with keys_excluded(model, removed_units):
        x = model.patch_embed(imgs)
        for layer in model.layers:
            x = layer(x)
            outs.append(x)
    return outs


def visible_of(stage_out, model, ids_keep, stage):
    """(N, H, W, C) stage output -> (N, K, u, u, C) tokens of the kept units, in ids_keep order."""
    u = model.geometry.unit_tokens(stage)
    gh, gw = model.grid_size
    n, _, _, c = stage_out.shape
    x = stage_out.view(n, gh, u, gw, u, c).permute(0, 1, 3, 2, 4, 5).reshape(n, gh * gw, u, u, c)
    return x[torch.arange(n)[:, None], ids_keep]


@pytest.mark.parametrize("geometry, fused", [(g, False) for g in sorted(GEOMETRIES)] + [("rect_48x32_p2_w6x4", True)])
def test_visible_path_equals_timm_with_removed_keys_excluded(geometry, fused):
    torch.manual_seed(0)
    model = create_swin_mae("swin_tiny_patch4_window7_224", decoder_embed_dim=32, decoder_num_heads=4,
                            **GEOMETRIES[geometry]).double().eval()
    for layer in model.layers:  # timm's two attention kernels (TIMM_FUSED_ATTN): both paths follow the flag
        for blk in layer.blocks:
            blk.attn.fused_attn = fused
    g = model.geometry
    assert any(any(s) for s in g.shifts), "the test must include shifted windows"
    imgs = torch.randn(2, 3, *g.img_size, dtype=torch.float64)
    m = random_masking(2, model.num_patches, 0.75)
    removed = m.mask.bool()
    got = model.encode_visible(imgs, m.ids_keep, return_stages=True)
    ref = reference_stages(model, imgs, removed)
    for s, (a, b) in enumerate(zip(got, ref)):
        b = visible_of(b, model, m.ids_keep, s)
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"stage {s} differs")
    # Control: without the key mask timm's output differs, so the comparison can see leaks.
    plain = model.layers[0](model.patch_embed(imgs))
    assert not torch.allclose(visible_of(plain, model, m.ids_keep, 0), got[0], atol=1e-6)


def test_visible_path_gradients_match_reference():
    torch.manual_seed(1)
    model = tiny_swin_mae().double()
    imgs = torch.randn(2, 3, 48, 32, dtype=torch.float64)
    m = random_masking(2, model.num_patches, 0.75)
    weights = torch.randn(2, m.ids_keep.shape[1], model.embed_dim, dtype=torch.float64)

    (model.encode_visible(imgs, m.ids_keep) * weights).sum().backward()
    got = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    last = reference_stages(model, imgs, m.mask.bool())[-1]
    out = model.norm(visible_of(last, model, m.ids_keep, len(model.layers) - 1).flatten(2))
    (out * weights).sum().backward()
    ref = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys() and any(k.endswith("relative_position_bias_table") for k in got)
    for k in got:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-9, atol=1e-10, msg=k)


def test_units_align_with_every_stage():
    g = validate_swin_geometry(224, 4, [7] * 4)  # Swin-T: 224 px, patch 4, three merges
    assert g.unit_px == (32, 32) and g.unit_grid == (7, 7) and g.units == 49
    for s in range(g.num_stages):
        # a unit covers a whole square of tokens, and each merge's 2x2 groups stay inside one unit
        assert g.unit_tokens(s) * 4 * 2**s == 32
        assert g.unit_tokens(s) % 2 == 0 or s == g.num_stages - 1
    # Functionally, on a small Swin: in timm's all-token forward (removed keys excluded), what is in the
    # removed units never reaches the visible tokens at any stage -- patch merging does not mix them.
    torch.manual_seed(2)
    small = tiny_swin_mae().double()
    imgs = torch.randn(2, 3, 48, 32, dtype=torch.float64)
    m = random_masking(2, small.num_patches, 0.75)
    p, q = small.patch_size  # the masking unit, 8 px here
    removed_px = small.unpatchify(m.mask[:, :, None].double().expand(-1, -1, p * q * 3)).bool()
    other = torch.where(removed_px, torch.randn_like(imgs) * 5, imgs)
    a = reference_stages(small, imgs, m.mask.bool())
    b = reference_stages(small, other, m.mask.bool())
    for s in range(len(a)):
        va, vb = visible_of(a[s], small, m.ids_keep, s), visible_of(b[s], small, m.ids_keep, s)
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-12)
    assert not torch.allclose(a[0], b[0])  # the removed tokens themselves did change


def test_forward_shapes_modes_and_seeded_mask():
    torch.manual_seed(3)
    imgs = torch.randn(3, 3, 48, 32)
    noise = torch.rand(3, 24)
    for mode in ("visible", "mask_token"):
        model = tiny_swin_mae(mode)
        loss, pred, mask = model(imgs, mask_ratio=0.75, noise=noise)
        assert pred.shape == (3, 24, 8 * 8 * 3) and mask.shape == (3, 24)
        assert mask.sum(1).tolist() == [18.0] * 3
        torch.testing.assert_close(mask, random_masking(3, 24, 0.75, noise).mask)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert "input_mask_token" in dict(tiny_swin_mae("mask_token").named_parameters())
    assert "input_mask_token" not in dict(tiny_swin_mae("visible").named_parameters())


def test_modes_share_weights_and_differ_only_in_the_encoder():
    torch.manual_seed(4)
    vis = tiny_swin_mae("visible").double()
    tok = tiny_swin_mae("mask_token").double()
    tok.load_state_dict(vis.state_dict(), strict=False)
    imgs = torch.randn(2, 3, 48, 32, dtype=torch.float64)
    noise = torch.rand(2, 24, dtype=torch.float64)
    # nothing removed: both encoders are timm's plain forward on the shared weights
    every = torch.arange(24).expand(2, 24)
    zv = vis.encode_visible(imgs, every)
    zt = tok.encode_mask_token(imgs, torch.zeros(2, 24, dtype=torch.float64))
    torch.testing.assert_close(zv, zt, rtol=1e-10, atol=1e-10)
    lv, _ = vis.forward_encoder(imgs, 0.75, noise)
    lt, _ = tok.forward_encoder(imgs, 0.75, noise)
    assert lv.shape == lt.shape and not torch.allclose(lv, lt)


@pytest.mark.parametrize("kwargs, message", [
    (dict(img_size=30, patch_size=4, window_size=7), "not a multiple of patch_size"),
    (dict(img_size=40, patch_size=4, window_size=5), "cannot halve exactly"),
    (dict(img_size=96, patch_size=4, window_size=7), "does not tile"),
])
def test_sizes_that_do_not_fit_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_swin_mae("swin_tiny_patch4_window7_224", **kwargs)


def test_validation_messages_name_the_fix():
    with pytest.raises(ValueError, match=r"multiple of patch_size x 2\*\*3 = 32"):
        validate_swin_geometry(40, 4, [7] * 4)
    with pytest.raises(ValueError, match=r"stage 0 has a 24 token grid .*one of \[2, 3, 4, 6, 8, 12, 24\]"):
        validate_swin_geometry(96, 4, [7] * 4)
    g = validate_swin_geometry(224, 4, [7] * 4)
    assert g.windows[-1] == (7, 7) and g.shifts == ((3, 3), (3, 3), (3, 3), (0, 0))
    with pytest.raises(ValueError, match="keeps none"):
        tiny_swin_mae()(torch.randn(1, 3, 48, 32), mask_ratio=0.99)
    with pytest.raises(ValueError, match="mode"):
        tiny_swin_mae("simmim")
    assert is_timm_swin("swin_tiny_patch4_window7_224") and not is_timm_swin("vit_tiny_patch16_224")


def swin_demo_config(out, **kw) -> Config:
    """A tiny Swin MAE on the demo set: 32 px (demo images are resized), patch 2, window 4, two stages."""
    base = dict(method="mae", data="demo", output_dir=str(out), model="swin_tiny_patch4_window7_224",
                model_kwargs={"depths": [2, 2], "num_heads": [2, 4], "embed_dim": 16, "window_size": 4},
                img_size=32, patch_size=2, in_chans=1, mean=(0.5,), std=(0.5,), decoder_embed_dim=32,
                decoder_depth=1, decoder_num_heads=4, epochs=1, warmup_epochs=0, batch_size=16, num_workers=0,
                max_steps=4, log_every=1, save_every_steps=2, keep_last=5, progress_bar=False,
                wandb_mode="disabled")
    base.update(kw)
    return Config(**base)


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in open(run_dir / "metrics.jsonl")]


def test_tiny_swin_mae_run_resumes_exactly_and_exports_a_timm_encoder(tmp_path):
    full = train(swin_demo_config(tmp_path / "full"))
    assert full["step"] == 4 and all(map(torch.isfinite, torch.tensor(full["losses"])))
    train(swin_demo_config(tmp_path / "part", max_steps=2))
    train(swin_demo_config(tmp_path / "part", resume="auto"))
    assert losses(tmp_path / "part") == pytest.approx(losses(tmp_path / "full"), rel=1e-6, abs=0)

    ckpt = load_checkpoint(list_checkpoints(tmp_path / "full")[-1])
    encoder = build_encoder(ckpt["config"])
    encoder.load_state_dict(encoder_state_dict(ckpt), strict=True)
    assert isinstance(encoder, timm.models.swin_transformer.SwinTransformer)
    torch.testing.assert_close(encoder.layers[1].blocks[1].attn.qkv.weight,
                               ckpt["model"]["layers.1.blocks.1.attn.qkv.weight"])


def test_mask_token_mode_trains_and_exports(tmp_path):
    summary = train(swin_demo_config(tmp_path / "tok", swin_mae_mode="mask_token", max_steps=2))
    assert summary["step"] == 2
    ckpt = load_checkpoint(list_checkpoints(tmp_path / "tok")[-1])
    assert "input_mask_token" in ckpt["model"]
    build_encoder(ckpt["config"]).load_state_dict(encoder_state_dict(ckpt), strict=True)
