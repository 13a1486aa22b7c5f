"""The DINO ViT recipes are the official README commands, field by field; ``--method dino`` gets DINO's defaults."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sslab.config import Config, parse_args

ROOT = Path(__file__).resolve().parents[1]

# facebookresearch/dino main_dino.py get_args_parser() defaults (the arguments that shape training).
MAIN_DINO_DEFAULTS = dict(
    arch="vit_small", patch_size=16, out_dim=65536, norm_last_layer=True, momentum_teacher=0.996,
    use_bn_in_head=False, warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0,
    use_fp16=True, weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0, batch_size_per_gpu=64, epochs=100,
    freeze_last_layer=1, lr=0.0005, warmup_epochs=10, min_lr=1e-6, optimizer="adamw", drop_path_rate=0.1,
    global_crops_scale=(0.4, 1.0), local_crops_number=8, local_crops_scale=(0.05, 0.4), seed=0, num_workers=10,
)
# Fixed in the official code: crop sizes (DataAugmentationDINO), DINOLoss and DINOHead defaults,
# torch.optim.AdamW's betas, per-parameter clipping (utils.clip_gradients).
MAIN_DINO_FIXED = dict(global_crops_size=224, local_crops_size=96, student_temp=0.1, center_momentum=0.9,
                       head_hidden_dim=2048, head_bottleneck_dim=256, head_nlayers=3, betas=(0.9, 0.999))

# The README's commands: arguments given, and the processes they run on.
README_COMMANDS = {
    "dino_vits16": (dict(arch="vit_small"), 8),                                  # vanilla, 8 GPUs
    "dino_vits16_boost": (dict(arch="vit_small", epochs=300, teacher_temp=0.07, warmup_teacher_temp_epochs=30,
                               norm_last_layer=False), 16),                      # run_with_submitit: 2 x 8
}


def load_recipe(name: str) -> Config:
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CONFIG


@pytest.mark.parametrize("name", sorted(README_COMMANDS))
def test_recipe_equals_the_official_command_field_by_field(name):
    given, gpus = README_COMMANDS[name]
    a = {**MAIN_DINO_DEFAULTS, **given}
    cfg = load_recipe(name)
    want = {
        "method": "dino", "model": f"{a['arch']}_patch{a['patch_size']}_224", "img_size": 224,
        "out_dim": a["out_dim"], "norm_last_layer": a["norm_last_layer"], "momentum_teacher": a["momentum_teacher"],
        "use_bn_in_head": a["use_bn_in_head"], "warmup_teacher_temp": a["warmup_teacher_temp"],
        "teacher_temp": a["teacher_temp"], "warmup_teacher_temp_epochs": a["warmup_teacher_temp_epochs"],
        "mixed_precision": "fp16" if a["use_fp16"] else "no", "weight_decay": a["weight_decay"],
        "weight_decay_end": a["weight_decay_end"], "clip_grad": a["clip_grad"], "clip_grad_mode": "per_param",
        "batch_size": a["batch_size_per_gpu"], "effective_batch_size": a["batch_size_per_gpu"] * gpus,
        "epochs": a["epochs"], "freeze_last_layer": a["freeze_last_layer"], "base_lr": a["lr"],
        "warmup_epochs": a["warmup_epochs"], "min_lr": a["min_lr"], "model_kwargs": {"drop_path_rate": a["drop_path_rate"]},
        "global_crops_scale": a["global_crops_scale"], "local_crops_number": a["local_crops_number"],
        "local_crops_scale": a["local_crops_scale"], "seed": a["seed"], "num_workers": a["num_workers"],
        "lr": None, "pos_interpolation": "dino", **MAIN_DINO_FIXED,
    }
    got = {k: getattr(cfg, k) for k in want}
    got = {k: tuple(v) if isinstance(v, list) else v for k, v in got.items()}
    got["global_crops_size"] = cfg.global_crops_size or cfg.img_size  # None: img_size
    assert got == want
    assert cfg.patch_size in (None, a["patch_size"]) and a["optimizer"] == "adamw"


def test_method_dino_without_a_recipe_gets_dinos_defaults():
    cfg = parse_args(Config(), ["--method", "dino"])
    a = MAIN_DINO_DEFAULTS
    assert tuple(cfg.betas) == MAIN_DINO_FIXED["betas"] and cfg.min_lr == a["min_lr"]
    assert (cfg.base_lr, cfg.weight_decay, cfg.weight_decay_end, cfg.warmup_epochs, cfg.epochs) == (
        a["lr"], a["weight_decay"], a["weight_decay_end"], a["warmup_epochs"], a["epochs"])
    assert (cfg.clip_grad, cfg.clip_grad_mode, cfg.model_kwargs) == (a["clip_grad"], "per_param",
                                                                      {"drop_path_rate": a["drop_path_rate"]})
    assert (cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs) == (0.04, 0.04, 0)
    # what the command line sets stays, even when it is MAE's value; MAE keeps MAE's defaults
    cfg = parse_args(Config(), ["--method", "dino", "--betas", "0.9,0.95", "--min-lr", "0"])
    assert tuple(cfg.betas) == (0.9, 0.95) and cfg.min_lr == 0.0 and cfg.weight_decay_end == 0.4
    mae = parse_args(Config(), [])
    assert tuple(mae.betas) == (0.9, 0.95) and mae.min_lr == 0.0 and mae.weight_decay_end is None
