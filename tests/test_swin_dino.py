"""DINO on a timm Swin: multi-crop through one backbone, a tiny run that resumes exactly, size checks."""

from __future__ import annotations

import pytest
import timm
import torch

from conftest import read_metrics
from sslab import Config, train
from sslab.branches.dino import DINOBranch
from sslab.encoders import build_encoder, encoder_state_dict
from sslab.engine.checkpoint import list_checkpoints, load_checkpoint


def tiny_swin_dino_config(out, **changes) -> Config:
    """Two-stage Swin (patch 2, window 4, dims 16/32), 32 px globals + 2 x 12 px locals (padded to whole windows)."""
    base = Config(
        method="dino", data="demo", output_dir=str(out), model="swin_tiny_patch4_window7_224",
        model_kwargs={"depths": [2, 2], "num_heads": [2, 4], "embed_dim": 16, "window_size": 4,
                      "drop_path_rate": 0.1},
        img_size=32, patch_size=2, in_chans=1, mean=(0.286,), std=(0.353,), out_dim=128, head_hidden_dim=32,
        head_bottleneck_dim=16, local_crops_number=2, local_crops_size=12, epochs=2, warmup_epochs=0,
        warmup_teacher_temp_epochs=1, batch_size=8, base_lr=5e-4, betas=(0.9, 0.999), weight_decay=0.04,
        weight_decay_end=0.4, clip_grad=3.0, clip_grad_mode="per_param", num_workers=0, max_steps=4, log_every=1,
        save_every_steps=2, keep_last=5, progress_bar=False, wandb_mode="disabled",
    )
    return base.replace(**changes)


def test_multicrop_goes_through_one_swin_and_pools_the_last_stage(tmp_path):
    torch.manual_seed(0)
    branch = DINOBranch(tiny_swin_dino_config(tmp_path))
    branch.model.eval()  # no drop path, so the two forwards below compare
    backbone = branch.model.backbone
    assert isinstance(backbone, timm.models.swin_transformer.SwinTransformer) and backbone.global_pool == "avg"
    crops = [torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32), torch.randn(3, 1, 12, 12), torch.randn(3, 1, 12, 12)]
    logits, emb = branch.model(crops, return_embeddings=True)
    assert logits.shape == (12, 128) and emb.shape == (12, 32)
    # the head sees the average of the normed last stage, as timm's forward_head
    with torch.no_grad():
        feats = backbone.forward_features(crops[2])  # (3, 3, 3, 32): 12 px -> 6x6 -> 3x3 tokens
        torch.testing.assert_close(emb[6:9], feats.mean(dim=(1, 2)))


def test_tiny_swin_dino_run_resumes_exactly_and_exports_a_timm_encoder(tmp_path):
    full = tiny_swin_dino_config(tmp_path / "full", max_steps=3)
    train(full)
    part = tiny_swin_dino_config(tmp_path / "part", max_steps=1)
    train(part)
    train(part.replace(max_steps=3, resume="auto"))
    a, b = read_metrics(full.output_dir), read_metrics(part.output_dir)
    assert [r["step"] for r in b] == [1, 2, 3]
    for key in ("loss", "teacher_temp", "teacher_entropy", "kl_teacher_student"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in a)

    ckpt = load_checkpoint(list_checkpoints(full.output_dir)[-1])
    encoder = build_encoder(ckpt["config"])
    encoder.load_state_dict(encoder_state_dict(ckpt), strict=True)  # the teacher's backbone, timm's keys
    assert isinstance(encoder, timm.models.swin_transformer.SwinTransformer)
    assert encoder(torch.randn(2, 1, 32, 32)).shape == (2, 32)


@pytest.mark.parametrize("changes, message", [
    (dict(img_size=36), "does not tile"),                        # 18x18 grid, window 4
    (dict(img_size=34), "cannot halve exactly"),                 # 17x17 grid, one merge
    (dict(global_crops_size=48), "laid out for img_size 32"),    # windows fixed for 32 px
    (dict(local_crops_size=13), "not a multiple of the patch size"),
])
def test_swin_sizes_that_do_not_fit_are_rejected(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        DINOBranch(tiny_swin_dino_config(tmp_path, **changes))
