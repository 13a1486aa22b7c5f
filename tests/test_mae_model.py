"""The MAE model: shapes of the official code, official key layout, init, size validation."""

import pytest
import torch

import sslab
from sslab.models.pos_embed import sincos_2d


def official_mae_keys(embed=768, depth=12, dec_embed=512, dec_depth=8, patch=16, chans=3, grid=14, decoder=True):
    """Key -> shape of the official MAE release (models_mae.py with timm 0.3.2 Blocks), written out independently."""
    L = grid * grid
    sd = {"cls_token": (1, 1, embed), "pos_embed": (1, L + 1, embed),
          "patch_embed.proj.weight": (embed, chans, patch, patch), "patch_embed.proj.bias": (embed,),
          "norm.weight": (embed,), "norm.bias": (embed,)}

    def block(prefix, d):
        return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
                f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
                f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
                f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
                f"{prefix}.mlp.fc1.weight": (4 * d, d), f"{prefix}.mlp.fc1.bias": (4 * d,),
                f"{prefix}.mlp.fc2.weight": (d, 4 * d), f"{prefix}.mlp.fc2.bias": (d,)}

    for i in range(depth):
        sd.update(block(f"blocks.{i}", embed))
    if decoder:
        sd.update({"mask_token": (1, 1, dec_embed), "decoder_pos_embed": (1, L + 1, dec_embed),
                   "decoder_embed.weight": (dec_embed, embed), "decoder_embed.bias": (dec_embed,),
                   "decoder_norm.weight": (dec_embed,), "decoder_norm.bias": (dec_embed,),
                   "decoder_pred.weight": (patch * patch * chans, dec_embed),
                   "decoder_pred.bias": (patch * patch * chans,)})
        for i in range(dec_depth):
            sd.update(block(f"decoder_blocks.{i}", dec_embed))
    return sd


def random_state(shapes):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def test_official_visualize_checkpoint_loads_strictly():
    model = sslab.create_mae("vit_base_patch16_224")
    sd = random_state(official_mae_keys())
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"])
    assert torch.equal(model.decoder_blocks[7].mlp.fc2.bias, sd["decoder_blocks.7.mlp.fc2.bias"])
    assert torch.equal(model.mask_token, sd["mask_token"])


def test_official_encoder_only_checkpoint_misses_only_the_decoder():
    model = sslab.create_mae("vit_base_patch16_224")
    res = model.load_state_dict(random_state(official_mae_keys(decoder=False)), strict=False)
    assert res.unexpected_keys == []
    assert res.missing_keys and all(k.startswith(("decoder_", "mask_token")) for k in res.missing_keys)


def test_forward_shapes_of_the_official_code_and_small_config():
    model = sslab.create_mae("vit_tiny_patch16_224", img_size=32, patch_size=4, decoder_embed_dim=64,
                             decoder_depth=1, decoder_num_heads=4)
    loss, pred, mask = model(torch.randn(3, 3, 32, 32), mask_ratio=0.75)
    assert pred.shape == (3, 64, 4 * 4 * 3) and mask.shape == (3, 64)
    assert torch.equal(mask.sum(1), torch.full((3,), 48.0)) and loss.ndim == 0
    loss.backward()
    assert model.pos_embed.grad is None and model.decoder_pos_embed.grad is None  # fixed sin-cos


def test_noise_argument_makes_forward_deterministic():
    model = sslab.create_mae("vit_tiny_patch16_224", img_size=32, patch_size=4, in_chans=1, decoder_embed_dim=64,
                             decoder_depth=1, decoder_num_heads=4).eval()
    x, noise = torch.randn(2, 1, 32, 32), torch.rand(2, 64)
    a, b = model(x, 0.75, noise), model(x, 0.75, noise.clone())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_official_initialisation():
    model = sslab.create_mae("vit_small_patch16_224", img_size=64, patch_size=8, decoder_embed_dim=128,
                             decoder_depth=1, decoder_num_heads=4)
    assert torch.equal(model.pos_embed[0], sincos_2d(384, 8, cls_token=True))
    assert torch.equal(model.decoder_pos_embed[0], sincos_2d(128, 8, cls_token=True))
    assert not model.pos_embed.requires_grad
    assert torch.equal(model.blocks[0].attn.qkv.bias, torch.zeros_like(model.blocks[0].attn.qkv.bias))
    w = model.blocks[1].mlp.fc1.weight
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5  # xavier-uniform
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    pw = model.patch_embed.proj.weight
    pbound = (6 / (pw.shape[0] + pw[0].numel())) ** 0.5  # patch embedding as a linear layer
    assert pw.abs().max() <= pbound and pw.abs().max() > 0.9 * pbound
    assert 0.015 < model.mask_token.std() < 0.025 and model.norm.weight.eq(1).all()


def test_patchify_round_trip_and_pixel_order():
    model = sslab.create_mae("vit_tiny_patch16_224", img_size=8, patch_size=4, in_chans=2, decoder_embed_dim=64,
                             decoder_depth=1, decoder_num_heads=4)
    x = torch.randn(2, 2, 8, 8)
    p = model.patchify(x)
    assert p.shape == (2, 4, 32) and torch.equal(model.unpatchify(p), x)
    # official order within a patch is (row, column, channel): element 1 is channel 1 of pixel (0, 0)
    assert p[0, 0, 1] == x[0, 1, 0, 0] and p[0, 1, 0] == x[0, 0, 0, 4]


def test_encode_matches_the_masked_encoder_with_nothing_removed():
    model = sslab.create_mae("vit_tiny_patch16_224", img_size=16, patch_size=4, decoder_embed_dim=64,
                             decoder_depth=1, decoder_num_heads=4).eval()
    x = torch.randn(2, 3, 16, 16)
    noise = torch.arange(16.0).repeat(2, 1)  # identity shuffle
    latent, mask, _ = model.forward_encoder(x, 0.0, noise)
    assert mask.sum() == 0 and torch.allclose(latent, model.encode(x), atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(img_size=30, patch_size=4), "not a multiple of patch_size"),
    (dict(decoder_embed_dim=100, decoder_num_heads=16), "not divisible by decoder_num_heads"),
])
def test_bad_sizes_are_rejected_with_the_way_out(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sslab.create_mae("vit_tiny_patch16_224", **kwargs)


def test_unknown_or_unsuitable_encoder():
    with pytest.raises(ValueError, match="unknown timm model"):
        sslab.create_mae("vit_tinyy_patch16_224")
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        sslab.create_mae("resnet18")
    with pytest.raises(ValueError, match="expected images of shape"):
        sslab.create_mae("vit_tiny_patch16_224", img_size=32, patch_size=4)(torch.randn(1, 3, 28, 28))
