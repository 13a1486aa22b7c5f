"""Published DINO checkpoints: the official layouts (built here with random weights) load into sslab."""

import argparse

import pytest
import timm
import torch

from conftest import make_image_folder, read_metrics
from sslab import train
from sslab.branches.dino import DINOBranch
from sslab.engine import list_checkpoints
from sslab.official_dino import (config_from_official_args, load_official_backbone, main, official_to_sslab_checkpoint,
                                 restore_official_run)

DEPTH, DIM, PATCH, IMG, OUT, HID, BOT = 2, 192, 4, 16, 32, 24, 8


def official_vit(gen):
    """The official vision_transformer.VisionTransformer state dict, key for key, with random weights."""
    n = (IMG // PATCH) ** 2
    shapes = {"cls_token": (1, 1, DIM), "pos_embed": (1, n + 1, DIM), "patch_embed.proj.weight": (DIM, 3, PATCH, PATCH),
              "patch_embed.proj.bias": (DIM,)}
    for i in range(DEPTH):
        shapes.update({f"blocks.{i}.norm1.weight": (DIM,), f"blocks.{i}.norm1.bias": (DIM,),
                       f"blocks.{i}.attn.qkv.weight": (3 * DIM, DIM), f"blocks.{i}.attn.qkv.bias": (3 * DIM,),
                       f"blocks.{i}.attn.proj.weight": (DIM, DIM), f"blocks.{i}.attn.proj.bias": (DIM,),
                       f"blocks.{i}.norm2.weight": (DIM,), f"blocks.{i}.norm2.bias": (DIM,),
                       f"blocks.{i}.mlp.fc1.weight": (4 * DIM, DIM), f"blocks.{i}.mlp.fc1.bias": (4 * DIM,),
                       f"blocks.{i}.mlp.fc2.weight": (DIM, 4 * DIM), f"blocks.{i}.mlp.fc2.bias": (DIM,)})
    shapes.update({"norm.weight": (DIM,), "norm.bias": (DIM,)})
    return {k: torch.randn(s, generator=gen) * 0.05 for k, s in shapes.items()}


def official_head(gen):
    """The official vision_transformer.DINOHead (nn.utils.weight_norm last layer) state dict."""
    shapes = {"mlp.0.weight": (HID, DIM), "mlp.0.bias": (HID,), "mlp.2.weight": (HID, HID), "mlp.2.bias": (HID,),
              "mlp.4.weight": (BOT, HID), "mlp.4.bias": (BOT,), "last_layer.weight_g": (OUT, 1),
              "last_layer.weight_v": (OUT, BOT)}
    sd = {k: torch.randn(s, generator=gen) * 0.05 for k, s in shapes.items()}
    sd["last_layer.weight_g"] = torch.ones(OUT, 1)
    return sd


def official_wrapper(gen, prefix=""):
    return {**{f"{prefix}backbone.{k}": v for k, v in official_vit(gen).items()},
            **{f"{prefix}head.{k}": v for k, v in official_head(gen).items()}}


def official_args(**changes):
    a = dict(arch="vit_tiny", patch_size=PATCH, out_dim=OUT, norm_last_layer=True, momentum_teacher=0.996,
             use_bn_in_head=False, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=1,
             use_fp16=False, weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0, batch_size_per_gpu=8,
             epochs=3, freeze_last_layer=1, lr=0.0005, warmup_epochs=1, min_lr=1e-6, optimizer="adamw",
             drop_path_rate=0.1, global_crops_scale=(0.4, 1.0), local_crops_number=2, local_crops_scale=(0.05, 0.4),
             data_path="/path/to/imagenet/train", output_dir=".", saveckp_freq=20, seed=0, num_workers=10,
             dist_url="env://", local_rank=0, world_size=1)
    a.update(changes)
    return argparse.Namespace(**a)


def sslab_config(tmp_path, args):
    """The official run's config at test size (depth 2, 16 px globals, 8 px locals)."""
    return config_from_official_args(
        args, model_kwargs={"depth": DEPTH, "drop_path_rate": 0.1}, img_size=IMG, global_crops_size=IMG,
        local_crops_size=8, head_hidden_dim=HID, head_bottleneck_dim=BOT, data=str(tmp_path / "images"),
        output_dir=str(tmp_path / "run"), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_workers=0,
        progress_bar=False, wandb_mode="disabled", log_every=1)


def test_config_from_official_args_maps_the_recipe():
    cfg = config_from_official_args(official_args(arch="deit_small", patch_size=16, clip_grad=0.0, use_fp16=True))
    assert cfg.model == "vit_small_patch16_224" and cfg.patch_size == 16 and cfg.method == "dino"
    assert cfg.clip_grad is None and cfg.clip_grad_mode == "per_param" and cfg.mixed_precision == "fp16"
    assert (cfg.base_lr, cfg.weight_decay_end, cfg.teacher_temp, cfg.local_crops_number) == (0.0005, 0.4, 0.07, 2)
    assert cfg.model_kwargs == {"drop_path_rate": 0.1} and cfg.betas == (0.9, 0.999)
    with pytest.raises(ValueError, match="resnet50"):
        config_from_official_args(official_args(arch="resnet50"))


def test_backbone_only_release_loads_into_the_timm_vit(tmp_path):
    gen = torch.Generator().manual_seed(0)
    release = official_vit(gen)
    path = tmp_path / "dino_deittiny4_pretrain.pth"
    torch.save(release, path)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=IMG, patch_size=PATCH, depth=DEPTH)
    load_official_backbone(vit, path)  # strict
    assert all(torch.equal(vit.state_dict()[k], v) for k, v in release.items())


def test_full_checkpoint_restores_student_teacher_and_center(tmp_path):
    gen = torch.Generator().manual_seed(1)
    ckpt = {"student": official_wrapper(gen, "module."), "teacher": official_wrapper(gen), "epoch": 2,
            "dino_loss": {"center": torch.randn(1, OUT, generator=gen)}, "args": official_args()}
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)  # argparse.Namespace inside, as the official file
    branch = DINOBranch(sslab_config(tmp_path, ckpt["args"]))
    assert restore_official_run(branch, path) == 2
    for k, v in ckpt["student"].items():
        assert torch.equal(branch.model.state_dict()[k.removeprefix("module.")], v)
    for k, v in ckpt["teacher"].items():
        assert torch.equal(branch.teacher.state_dict()[k], v)
    assert torch.equal(branch.dino_loss.center, ckpt["dino_loss"]["center"])
    # the teacher backbone of the full checkpoint also loads as an encoder
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=IMG, patch_size=PATCH, depth=DEPTH)
    load_official_backbone(vit, path)
    assert torch.equal(vit.pos_embed, ckpt["teacher"]["backbone.pos_embed"])


def test_converted_full_checkpoint_resumes_as_an_sslab_run(tmp_path):
    make_image_folder(tmp_path / "images", n_per_class=8, size=20)  # 24 images, batch 8 -> 3 steps per epoch
    args = official_args()
    cfg = sslab_config(tmp_path, args)
    # The official optimizer: AdamW over get_params_groups(student) (decayed first), after one step.
    gen = torch.Generator().manual_seed(2)
    student = DINOBranch(cfg).model
    student.load_state_dict({k: v for k, v in official_wrapper(gen).items()})
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not (n.endswith(".bias") or p.ndim == 1)]},
              {"params": [p for n, p in named if n.endswith(".bias") or p.ndim == 1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    for _, p in named:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    ckpt = {"student": {f"module.{k}": v for k, v in student.state_dict().items()},
            "teacher": official_wrapper(gen), "optimizer": opt.state_dict(), "epoch": 1,
            "dino_loss": {"center": torch.randn(1, OUT, generator=gen)}, "args": args}
    path = tmp_path / "official.pth"
    torch.save(ckpt, path)

    state = official_to_sslab_checkpoint(path, cfg, steps_per_epoch=3)
    assert state["step"] == 3 and state["effective_batch"] == 8
    assert [g["wd_scale"] for g in state["optimizer"]["param_groups"]] == [1.0, 0.0]
    first = named[0][1]
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], opt.state[first]["exp_avg"])
    assert torch.equal(state["branch"]["center"], ckpt["dino_loss"]["center"])

    # the command line does the same from the file and the data folder (24 images / batch 8 -> step 3)
    written = main([str(path), "--data", cfg.data, "--output-dir", cfg.output_dir, "--img-size", "16",
                    "--global-crops-size", "16", "--local-crops-size", "8", "--head-hidden-dim", str(HID),
                    "--head-bottleneck-dim", str(BOT), "--model-kwargs", '{"depth": 2, "drop_path_rate": 0.1}',
                    "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"])
    assert written.name == "checkpoint-00000003.pt"
    out = train(cfg.replace(resume="auto", max_steps=5))
    assert out["step"] == 5 and [r["step"] for r in read_metrics(cfg.output_dir)] == [4, 5]
    assert list_checkpoints(cfg.output_dir)[-1].name == "checkpoint-00000005.pt"
