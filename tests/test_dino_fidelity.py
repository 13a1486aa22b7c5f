"""DINO as the official code computes it: ViT position interpolation for small crops, class-token init,
and one center update per optimiser step under gradient accumulation."""

import math

import numpy as np
import pytest
import timm
import torch

from conftest import read_metrics
from sslab import Config, DINOLoss, train
from sslab.branches.dino import DINOBranch, build_backbone
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.errors import SslabError


def tiny_vit_cfg(**changes) -> Config:
    """ViT-Tiny depth 2, patch 4, 28 px global crops (7 x 7 grid)."""
    return Config(method="dino", model="vit_tiny_patch16_224", model_kwargs={"depth": 2}, img_size=28, patch_size=4,
                  in_chans=3, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16).replace(**changes)


def cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights (a = -0.75, as PyTorch's bicubic) of the 4 neighbours at offset t."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def direct_official_interpolation(pos_embed: torch.Tensor, h0: int, w0: int) -> torch.Tensor:
    """The official formula written out: bicubic at scale ((h0 + .1) / sqrt N, (w0 + .1) / sqrt N), no antialias.

    Output pixel i samples the source at (i + 0.5) / scale - 0.5 (half-pixel centres, the scale factor
    as given), from the 4 x 4 neighbours with edge indices clamped. float64, loops, numpy only.
    """
    pe = pos_embed.detach().double().numpy()[0]
    n = pe.shape[0] - 1
    side = int(round(math.sqrt(n)))
    grid = pe[1:].reshape(side, side, -1)
    scales = ((h0 + 0.1) / math.sqrt(n), (w0 + 0.1) / math.sqrt(n))

    def taps(i, scale):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        return [min(max(base + k - 1, 0), side - 1) for k in range(4)], cubic_weights(src - base)

    out = np.zeros((h0, w0, grid.shape[-1]))
    for i in range(h0):
        rows, wr = taps(i, scales[0])
        for j in range(w0):
            cols, wc = taps(j, scales[1])
            for r, a in zip(rows, wr):
                for c, b in zip(cols, wc):
                    out[i, j] += a * b * grid[r, c]
    return torch.from_numpy(np.concatenate([pe[:1], out.reshape(h0 * w0, -1)]))[None]


@pytest.mark.parametrize("crop", [12, 20])
def test_vit_crops_use_the_official_position_interpolation(crop):
    torch.manual_seed(0)
    cfg = tiny_vit_cfg()
    vit = build_backbone(cfg).eval()
    with torch.no_grad():
        vit.pos_embed.normal_()  # a position embedding with structure at every scale
    g = crop // 4
    want = direct_official_interpolation(vit.pos_embed, g, g)
    # End to end: the same ViT built for this crop size with the directly interpolated positions.
    fixed = timm.create_model(cfg.model, num_classes=0, img_size=crop, patch_size=4, depth=2).eval()
    sd = {k: v for k, v in vit.state_dict().items() if k != "pos_embed"}
    fixed.load_state_dict({**sd, "pos_embed": want.float()})
    x = torch.randn(3, 3, crop, crop)
    with torch.no_grad():
        got, ref = vit(x), fixed(x)
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    # timm's antialiased resize stays available, and is a different computation
    timm_vit = build_backbone(cfg.replace(pos_interpolation="timm")).eval()
    timm_vit.load_state_dict(vit.state_dict())
    with torch.no_grad():
        assert (timm_vit(x) - ref).abs().max() > 1e-3


def test_global_crops_keep_the_trained_positions_and_bad_option_is_refused():
    cfg = tiny_vit_cfg()
    vit = build_backbone(cfg).eval()
    x = torch.randn(2, 3, 28, 28)
    ref = timm.create_model(cfg.model, num_classes=0, img_size=28, patch_size=4, depth=2).eval()
    ref.load_state_dict(vit.state_dict())
    with torch.no_grad():
        assert torch.equal(vit(x), ref(x))
    with pytest.raises(SslabError, match="pos_interpolation 'bilinear'"):
        build_backbone(cfg.replace(pos_interpolation="bilinear"))


def test_vit_class_token_is_initialised_as_the_official_dino_vit():
    torch.manual_seed(0)
    branch = DINOBranch(tiny_vit_cfg(model="vit_small_patch16_224", local_crops_size=12, model_kwargs={"depth": 1}))
    cls = branch.model.backbone.cls_token.detach()
    assert 0.017 < cls.std().item() < 0.023 and cls.abs().max() <= 2.0  # trunc_normal_(std=.02); timm's is 1e-6
    assert torch.equal(cls, branch.teacher.backbone.cls_token)
    pos = branch.model.backbone.pos_embed.detach()
    assert 0.018 < pos.std().item() < 0.022  # trunc_normal_(std=.02), unchanged


def test_center_of_accumulated_micro_batches_is_the_center_of_one_batch():
    torch.manual_seed(0)
    k, b, out_dim, ncrops = 3, 4, 11, 4
    student, teacher = torch.randn(k, ncrops * b, out_dim), torch.randn(k, 2 * b, out_dim)
    start = torch.randn(1, out_dim)
    whole, accum = DINOLoss(out_dim, ncrops, 0.04, 0.07, 0, 5), DINOLoss(out_dim, ncrops, 0.04, 0.07, 0, 5)
    whole.center, accum.center = start.clone(), start.clone()
    # one batch of k*b: crop-major rows, crop v of every micro-batch together
    big_s = torch.cat([student[:, v * b:(v + 1) * b].reshape(k * b, -1) for v in range(ncrops)])
    big_t = torch.cat([teacher[:, v * b:(v + 1) * b].reshape(k * b, -1) for v in range(2)])
    loss_whole = whole(big_s, big_t, 0)
    losses = [accum(student[i], teacher[i], 0, update_center=False) for i in range(k)]
    assert torch.equal(accum.center, start)  # nothing moves inside the step
    accum.apply_accumulated_center()
    assert torch.allclose(torch.stack(losses).mean(), loss_whole, atol=1e-6)
    assert torch.allclose(accum.center, whole.center, atol=1e-6)
    assert accum.pending_rows == 0 and not accum.pending_sum.any()


def test_accum_iter_k_times_b_trains_like_one_batch_of_k_b(tmp_path):
    """Through the engine: accum 2 x batch 8 against accum 1 x batch 16, same images, no drop path."""
    common = dict(method="dino", data="demo", model="vit_tiny_patch16_224", model_kwargs={"depth": 1},
                  img_size=16, patch_size=4, in_chans=1, mean=(0.286,), std=(0.353,), out_dim=64,
                  head_hidden_dim=32, head_bottleneck_dim=16, local_crops_number=2, local_crops_size=8,
                  epochs=1, warmup_epochs=0, warmup_teacher_temp_epochs=0, teacher_temp=0.04, base_lr=5e-4,
                  betas=(0.9, 0.999), weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0,
                  clip_grad_mode="per_param", num_workers=0, log_every=1, progress_bar=False,
                  wandb_mode="disabled", max_steps=2, freeze_last_layer=0)
    one = Config(output_dir=str(tmp_path / "one"), batch_size=16, accum_iter=1, **common)
    acc = Config(output_dir=str(tmp_path / "acc"), batch_size=8, accum_iter=2, **common)
    train(one)
    train(acc)
    c1 = load_checkpoint(list_checkpoints(one.output_dir)[-1])["branch"]["center"]
    c2 = load_checkpoint(list_checkpoints(acc.output_dir)[-1])["branch"]["center"]
    assert c1.abs().max() > 1e-3  # it moved
    assert torch.allclose(c1, c2, rtol=1e-4, atol=1e-6), (c1 - c2).abs().max()
    l1 = [r["loss"] for r in read_metrics(one.output_dir)]
    l2 = [r["loss"] for r in read_metrics(acc.output_dir)]
    assert len(l1) == 2 and np.allclose(l1, l2, rtol=1e-5), (l1, l2)
