"""DINO through the engine on CPU: a tiny run, its checkpoint layout, and resume replaying the run."""

import torch

from conftest import make_image_folder, read_metrics
from sslab import Config, train
from sslab.encoders import encoder_from_checkpoint
from sslab.engine import list_checkpoints, load_checkpoint


def tiny_dino_config(tmp_path, **changes) -> Config:
    """ViT-Tiny depth 2, patch 4, 28 px globals + 2 x 12 px locals, out_dim 256, on the demo set."""
    base = Config(
        method="dino", data="demo", output_dir=str(tmp_path / "run"), model="vit_tiny_patch16_224",
        model_kwargs={"depth": 2, "drop_path_rate": 0.1}, img_size=28, patch_size=4, in_chans=1, mean=(0.286,),
        std=(0.353,), out_dim=256, head_hidden_dim=64, head_bottleneck_dim=32, local_crops_number=2,
        local_crops_size=12, epochs=2, warmup_epochs=0, warmup_teacher_temp_epochs=1, freeze_last_layer=1,
        batch_size=16, base_lr=5e-4, betas=(0.9, 0.999), weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0,
        clip_grad_mode="per_param", num_workers=0, log_every=1, progress_bar=False, wandb_mode="disabled",
        resume="",
    )
    return base.replace(**changes)


def test_tiny_run_logs_collapse_metrics_and_saves_the_dino_layout(tmp_path):
    cfg = tiny_dino_config(tmp_path, max_steps=4, log_every=2)
    out = train(cfg)
    rows = read_metrics(cfg.output_dir)
    assert out["step"] == 4 and [r["step"] for r in rows] == [2, 4]
    for key in ("loss", "teacher_entropy", "teacher_entropy_rel", "kl_teacher_student", "embedding_std",
                "embedding_std_rel", "top_prototype_share", "teacher_temp", "teacher_momentum"):
        assert key in rows[-1] and torch.isfinite(torch.tensor(rows[-1][key])), key
    assert rows[-1]["teacher_temp"] == 0.04 and 0 < rows[-1]["teacher_entropy_rel"] < 1
    # first epoch, fresh head: the loss is near ln(out_dim) at most (cross-entropy against a softmax)
    assert 0 < rows[0]["loss"] < 1.5 * torch.log(torch.tensor(256.0)).item()

    ckpt = load_checkpoint(list_checkpoints(cfg.output_dir)[-1])
    assert set(ckpt["model"]) == set(ckpt["branch"]["teacher"])
    assert all(k.startswith(("backbone.", "head.")) for k in ckpt["model"])
    assert "head.last_layer.weight_g" in ckpt["model"] and ckpt["branch"]["center"].shape == (1, 256)
    # the last layer is frozen in epoch 0: still the initial prototypes, in student and teacher
    assert torch.allclose(ckpt["model"]["head.last_layer.weight_v"], ckpt["branch"]["teacher"]["head.last_layer.weight_v"])
    assert not torch.equal(ckpt["model"]["backbone.cls_token"], ckpt["branch"]["teacher"]["backbone.cls_token"])
    encoder = encoder_from_checkpoint(list_checkpoints(cfg.output_dir)[-1])  # the teacher backbone
    assert torch.equal(encoder.cls_token, ckpt["branch"]["teacher"]["backbone.cls_token"])


def test_resume_replays_the_uninterrupted_run(tmp_path):
    # 24 images, batch 8 -> 3 steps per epoch; stop mid-epoch 1 (after the last-layer freeze and the
    # teacher-temperature warmup epoch), resume, and compare every logged number and the final weights.
    # Drop path is on (model_kwargs of tiny_dino_config): its randomness must replay too.
    images = make_image_folder(tmp_path / "images", n_per_class=8, size=20)
    common = dict(data=str(images), img_size=16, local_crops_size=8, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3,
                  batch_size=8, epochs=2, warmup_epochs=1, save_every_steps=100, keep_last=5)
    full = tiny_dino_config(tmp_path / "full", **common)
    train(full)
    part = tiny_dino_config(tmp_path / "part", **common, max_steps=4)
    train(part)
    train(part.replace(max_steps=None, resume="auto"))
    a, b = read_metrics(full.output_dir), read_metrics(part.output_dir)
    assert [r["step"] for r in b] == list(range(1, 7))
    for key in ("loss", "lr", "teacher_temp", "teacher_momentum", "teacher_entropy", "kl_teacher_student"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    ca = load_checkpoint(list_checkpoints(full.output_dir)[-1])
    cb = load_checkpoint(list_checkpoints(part.output_dir)[-1])
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert all(torch.equal(ca["branch"]["teacher"][k], cb["branch"]["teacher"][k]) for k in ca["branch"]["teacher"])
    assert torch.equal(ca["branch"]["center"], cb["branch"]["center"])
