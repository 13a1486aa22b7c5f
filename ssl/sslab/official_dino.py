"""The published DINO checkpoints (facebookresearch/dino) in sslab.

- The backbone-only release (``dino_deitsmall16_pretrain.pth`` ...): the official ViT's keys are
  timm's, so :func:`load_official_backbone` loads it strictly into the timm ViT a DINO run trains.
- The full training checkpoint (``*_full_checkpoint.pth``: ``student`` / ``teacher`` dicts with
  ``backbone.`` and ``head.`` keys, the student under DDP's ``module.``, plus ``optimizer``, ``epoch``,
  ``dino_loss`` {``center``}, ``fp16_scaler`` and the run's ``args``): :func:`restore_official_run`
  puts student, teacher and center into a :class:`~sslab.branches.dino.DINOBranch`, and
  :func:`official_to_sslab_checkpoint` writes an sslab checkpoint that ``--resume`` continues::

    python -m sslab.official_dino dino_deitsmall16_pretrain_full_checkpoint.pth \\
        --data /path/to/imagenet/train --output-dir runs/dino_vits16_continued [--world-size 16]

Every file is read without executing code (:func:`sslab.serialization.safe_load`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, parse_args
from .export import official_encoder_state_dict
from .serialization import safe_load
from .errors import SslabError

log = logging.getLogger("sslab")

OFFICIAL_VITS = ("vit_tiny", "vit_small", "vit_base")


def strip_prefix(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Remove ``prefix`` from every key that has it (DDP's ``module.``)."""
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def load_official(path_or_obj: str | os.PathLike | dict) -> dict:
    """The contents of an official DINO file (or pass-through of an already loaded dict)."""
    return path_or_obj if isinstance(path_or_obj, dict) else safe_load(path_or_obj)


def official_networks(ckpt: dict) -> tuple[dict, dict, torch.Tensor | None]:
    """(student, teacher, center or None) of an official full checkpoint, ``module.`` removed.

    Both state dicts are in the MultiCropWrapper layout (``backbone.*``, ``head.*``) that
    ``checkpoint["model"]`` and ``checkpoint["branch"]["teacher"]`` of sslab use.
    """
    if not isinstance(ckpt, dict) or "student" not in ckpt or "teacher" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SslabError(f"not an official DINO full checkpoint (needs 'student' and 'teacher'), got {keys}; "
                         "for the backbone-only release use load_official_backbone")
    student, teacher = strip_prefix(ckpt["student"], "module."), strip_prefix(ckpt["teacher"], "module.")
    center = (ckpt.get("dino_loss") or {}).get("center")
    return student, teacher, center


def load_official_backbone(model: nn.Module, source: str | os.PathLike | dict, strict: bool = True):
    """Load the backbone-only release (or the teacher backbone of a full checkpoint) into a timm ViT.

    The official ViT-S/16 is timm's ``vit_small_patch16_224`` key for key (same cls token, position
    embedding with the class position, qkv/proj/fc1/fc2 names, LayerNorm eps 1e-6).
    """
    sd = official_encoder_state_dict(load_official(source), source if not isinstance(source, dict) else "")
    return model.load_state_dict(sd, strict=strict)


def restore_official_run(branch, source: str | os.PathLike | dict) -> int:
    """Put an official full checkpoint's student, teacher and center into a DINOBranch; returns its epoch.

    Strict: the branch must be built with the checkpoint's architecture (model, patch size, out_dim,
    head sizes, ``use_bn_in_head``); :func:`config_from_official_args` gives that config.
    """
    ckpt = load_official(source)
    student, teacher, center = official_networks(ckpt)
    target = branch.model.module if hasattr(branch.model, "module") else branch.model
    target.load_state_dict(student, strict=True)
    branch.teacher.load_state_dict(teacher, strict=True)
    if center is not None:
        branch.dino_loss.center = center.to(branch.dino_loss.center.device, torch.float32).clone()
    return int(ckpt.get("epoch", 0))


def config_from_official_args(args: Any, **changes: Any) -> Config:
    """The sslab Config of an official run from its ``args`` (argparse.Namespace or dict), then ``changes``."""
    a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    arch = a.get("arch", "vit_small").replace("deit", "vit")
    if arch not in OFFICIAL_VITS:
        raise SslabError(f"official arch {arch!r} has no sslab counterpart; sslab trains ViTs ({', '.join(OFFICIAL_VITS)})")
    cfg = Config(
        method="dino", model=f"{arch}_patch16_224", patch_size=int(a.get("patch_size", 16)), img_size=224,
        model_kwargs={"drop_path_rate": float(a.get("drop_path_rate", 0.1))},
        out_dim=int(a.get("out_dim", 65536)), norm_last_layer=bool(a.get("norm_last_layer", True)),
        use_bn_in_head=bool(a.get("use_bn_in_head", False)), momentum_teacher=float(a.get("momentum_teacher", 0.996)),
        warmup_teacher_temp=float(a.get("warmup_teacher_temp", 0.04)), teacher_temp=float(a.get("teacher_temp", 0.04)),
        warmup_teacher_temp_epochs=int(a.get("warmup_teacher_temp_epochs", 0)),
        global_crops_size=224, global_crops_scale=tuple(a.get("global_crops_scale", (0.4, 1.0))),
        local_crops_number=int(a.get("local_crops_number", 8)), local_crops_size=96,
        local_crops_scale=tuple(a.get("local_crops_scale", (0.05, 0.4))),
        epochs=int(a.get("epochs", 100)), batch_size=int(a.get("batch_size_per_gpu", 64)),
        effective_batch_size=int(a.get("batch_size_per_gpu", 64)) * int(a.get("world_size", 1)),
        base_lr=float(a.get("lr", 0.0005)), min_lr=float(a.get("min_lr", 1e-6)),
        warmup_epochs=int(a.get("warmup_epochs", 10)), weight_decay=float(a.get("weight_decay", 0.04)),
        weight_decay_end=float(a.get("weight_decay_end", 0.4)), betas=(0.9, 0.999),
        clip_grad=float(a["clip_grad"]) if a.get("clip_grad", 3.0) else None, clip_grad_mode="per_param",
        freeze_last_layer=int(a.get("freeze_last_layer", 1)), seed=int(a.get("seed", 0)),
        mixed_precision="fp16" if a.get("use_fp16", True) else "no",
    )
    return cfg.replace(**changes)


def _optimizer_state(official: dict | None, optimizer: torch.optim.Optimizer) -> dict:
    """The official AdamW state in sslab's optimizer layout, or a fresh state if it does not fit.

    Both order parameters as ``named_parameters()`` in two groups (decayed first, then biases and
    1-D), so the state carries over when every moment has its parameter's shape; the groups get
    sslab's ``wd_scale`` (the engine sets lr and weight decay every step).
    """
    fresh = optimizer.state_dict()
    if not official or len(official.get("param_groups", [])) != len(fresh["param_groups"]):
        log.warning("official optimizer state missing or with other parameter groups: the AdamW moments restart")
        return fresh
    params = [p for g in optimizer.param_groups for p in g["params"]]
    ids = [i for g in official["param_groups"] for i in g["params"]]
    sizes_ok = [len(a["params"]) for a in official["param_groups"]] == [len(b["params"]) for b in fresh["param_groups"]]
    shapes_ok = sizes_ok and all(
        all(t.shape == p.shape for k, t in official["state"].get(i, {}).items() if k in ("exp_avg", "exp_avg_sq"))
        for i, p in zip(ids, params))
    if not shapes_ok:
        log.warning("official optimizer state does not match the model's parameters (another norm_last_layer?): "
                    "the AdamW moments restart")
        return fresh
    groups = [{**og, **{k: v for k, v in ng.items() if k != "params"}, "params": og["params"]}
              for og, ng in zip(official["param_groups"], fresh["param_groups"])]
    return {"state": official["state"], "param_groups": groups}


def accum_iter(cfg: Config, world_size: int) -> int:
    """Micro-batches per step of the resuming run (``effective_batch_size`` decides when set)."""
    if cfg.effective_batch_size is None:
        return cfg.accum_iter
    return max(1, cfg.effective_batch_size // (cfg.batch_size * world_size))


def official_to_sslab_checkpoint(source: str | os.PathLike | dict, cfg: Config, steps_per_epoch: int,
                                 world_size: int = 1) -> dict[str, Any]:
    """An sslab checkpoint (the dict ``--resume`` loads) that continues an official run after its last epoch.

    ``steps_per_epoch`` and ``world_size`` are those of the run that will resume (the engine requires
    the same effective batch ``batch_size x accum_iter x world_size``).
    """
    from .branches.dino import DINOBranch  # local: branches import the engine's schedules
    from .engine.train import _rng_state
    from .optim import adamw

    ckpt = load_official(source)
    branch = DINOBranch(cfg)
    epoch = restore_official_run(branch, ckpt)
    optimizer = adamw(branch.model, cfg.lr or cfg.base_lr, cfg.weight_decay, tuple(cfg.betas), branch.no_weight_decay())
    return {"model": branch.model.state_dict(), "optimizer": _optimizer_state(ckpt.get("optimizer"), optimizer),
            "scaler": ckpt.get("fp16_scaler") or {}, "branch": branch.state_dict(), "rng": _rng_state(),
            "step": epoch * steps_per_epoch, "epoch": epoch,
            "effective_batch": cfg.batch_size * accum_iter(cfg, world_size) * world_size, "config": cfg.to_dict()}


def main(argv: list[str] | None = None) -> Path:
    """``python -m sslab.official_dino FULL_CHECKPOINT --data D --output-dir O [--world-size N] [config overrides]``."""
    from .data.sources import open_images
    from .engine.checkpoint import save_checkpoint

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m sslab.official_dino", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="official *_full_checkpoint.pth (or a checkpoint.pth of main_dino.py)")
    ap.add_argument("--world-size", type=int, default=None,
                    help="processes of the resumed run (default: the official run's world_size)")
    ns, rest = ap.parse_known_args(argv)
    ckpt = load_official(ns.checkpoint)
    if "args" not in ckpt:
        ap.error(f"{ns.checkpoint} has no 'args'; build the Config yourself and call official_to_sslab_checkpoint")
    args = ckpt["args"]
    world = ns.world_size or int(getattr(args, "world_size", 1) if not isinstance(args, dict) else args.get("world_size", 1))
    cfg = parse_args(config_from_official_args(args), rest, description="overrides of the official run's config")
    n = len(open_images(cfg.data, "train", False, cfg.in_chans))
    steps = n // (cfg.batch_size * world) // accum_iter(cfg, world)
    state = official_to_sslab_checkpoint(ckpt, cfg, steps, world)
    out = save_checkpoint(state, cfg.output_dir, state["step"], keep_last=0)
    skip = {"resume", "progress_bar", "log_every", "save_every_steps", "keep_last", "num_workers"}
    flags = " ".join(f"--{f.name.replace('_', '-')} {_flag(getattr(cfg, f.name))}" for f in dataclasses.fields(cfg)
                     if f.name not in skip and not f.name.startswith("wandb"))
    print(f"wrote {out} (epoch {state['epoch']}, step {state['step']}). Continue it with {world} process(es) and "
          f"the same settings, e.g.\n  accelerate launch experiments/dino_vits16.py {flags} --resume auto",
          file=sys.stderr)
    return out


def _flag(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        import json
        return "'" + json.dumps(v) + "'"
    return str(v).lower() if isinstance(v, bool) else str(v)


if __name__ == "__main__":
    main()
