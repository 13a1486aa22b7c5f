"""MAE pretraining throughput: images/s and achieved FLOP/s of a recipe's training step on this device.

    python benchmarks/mae_throughput.py experiments/mae_vitb.py --data demo --batch-size 64 [--device cuda] [any --field]   # images are synthetic; --data only satisfies the recipe

Times forward + backward + AdamW step on synthetic images (data loading excluded), after warm-up,
and counts the step's floating-point operations with torch's FlopCounterMode (matmuls and
attention; 1 multiply-add = 2 FLOPs).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sslab.branches.mae import MAEBranch
from sslab.config import parse_args
from sslab.optim import adamw


def load_recipe(path: str):
    """The CONFIG of an experiments/*.py recipe file."""
    spec = importlib.util.spec_from_file_location("recipe", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CONFIG


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    args, rest = p.parse_known_args()
    cfg = parse_args(load_recipe(args.recipe), rest)
    device = torch.device(args.device)
    torch.manual_seed(0)
    branch = MAEBranch(cfg)
    model = branch.model.to(device).train()
    opt = adamw(model, 1e-4, cfg.weight_decay, tuple(cfg.betas), branch.no_weight_decay())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
    imgs = torch.randn(cfg.batch_size, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _, _ = model(imgs, mask_ratio=cfg.mask_ratio)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    print(f"recipe        {args.recipe}")
    print(f"device        {device_name(device)}  (torch {torch.__version__})")
    print(f"model         {cfg.model} img {cfg.img_size} patch {model.patch_size[0]} "
          f"decoder {cfg.decoder_embed_dim}x{cfg.decoder_depth}  params {params / 1e6:.1f}M  "
          f"mask {cfg.mask_ratio}  precision {cfg.mixed_precision}")
    print(f"batch         {cfg.batch_size}   steps timed {args.steps} (median)")
    print(f"step time     {t * 1e3:.1f} ms")
    print(f"images/s      {cfg.batch_size / t:.1f}")
    print(f"FLOPs/step    {flops / 1e12:.3f} TFLOP (fwd+bwd)")
    print(f"achieved      {flops / t / 1e12:.3f} TFLOP/s")


if __name__ == "__main__":
    main()
