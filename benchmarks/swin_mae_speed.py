"""Swin masked-image-modelling step speed: ``visible`` (GreenMIM's MAE: encoder on the visible units, MAE
decoder) vs ``mask_token`` (SimMIM: every token through the encoder, masked ones as a mask token, 1x1-conv +
pixel-shuffle head, L1 loss).

One run times both on the same encoder weights, images and masks: a step is forward + backward + AdamW
step (the engine's parameter groups); after warm-up the two alternate so that load changes hit both
alike; the median of the repeats is reported with the ratio mask_token / visible, and the ratio of the
best steps, which bursts of load from other jobs do not reach (GreenMIM, arXiv 2205.13515, reports 2.7x
on Swin-B). Both see the same mask ratio; SimMIM's own recipe (192 px, window 6, ratio 0.6) is the
second command.

    python benchmarks/swin_mae_speed.py                        # Swin-T, 224 px, 75 %, CPU, batch 8
    python benchmarks/swin_mae_speed.py --img-size 192 --window-size 6 --mask-ratio 0.6   # SimMIM's setting
    python benchmarks/swin_mae_speed.py --device cuda --batch-size 128 --amp bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from sslab.models.swin_mae import create_swin_mae
from sslab.optim import adamw


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="swin_tiny_patch4_window7_224")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--window-size", type=int, default=None, help="None: the model's own (7 for Swin-T)")
    p.add_argument("--batch-size", type=int, default=8, help="small default for a CPU")
    p.add_argument("--decoder-embed-dim", type=int, default=512)
    p.add_argument("--decoder-depth", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per mode")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--amp", default="no", choices=["no", "bf16", "fp16"], help="autocast dtype")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    """Build both modes with equal weights, time one training step of each, print times and the ratio."""
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU")
    torch.manual_seed(args.seed)
    kw = dict(img_size=args.img_size, decoder_embed_dim=args.decoder_embed_dim, decoder_depth=args.decoder_depth)
    if args.window_size:
        kw["window_size"] = args.window_size
    models = {"visible": create_swin_mae(args.model, mode="visible", **kw)}
    models["mask_token"] = create_swin_mae(args.model, mode="mask_token", **kw)
    # the same encoder weights; each keeps its own head (MAE decoder / SimMIM's conv) and mask token
    models["mask_token"].load_state_dict(models["visible"].state_dict(), strict=False)
    opts = {}
    for mode, m in models.items():
        m.to(device).train()
        opts[mode] = adamw(m, 1e-4, 0.05, (0.9, 0.95), m.no_weight_decay())  # the engine's optimiser
    units = models["visible"].num_patches
    imgs = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    noise = torch.rand(args.batch_size, units, device=device)
    amp = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(mode: str) -> tuple[float, float]:
        model, opt = models[mode], opts[mode]
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            loss, _, _ = model(imgs, mask_ratio=args.mask_ratio, noise=noise)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    for mode in models:
        for _ in range(args.warmup):
            step(mode)
    times: dict[str, list[float]] = {mode: [] for mode in models}
    cpu: dict[str, list[float]] = {mode: [] for mode in models}
    for _ in range(args.repeats):
        for mode in models:  # alternate, so drifting machine load affects both modes alike
            wall, proc = step(mode)
            times[mode].append(wall)
            cpu[mode].append(proc)

    med = {mode: statistics.median(t) for mode, t in times.items()}
    med_cpu = {mode: statistics.median(t) for mode, t in cpu.items()}
    ratio = med["mask_token"] / med["visible"]
    ratio_cpu = med_cpu["mask_token"] / med_cpu["visible"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    kept = int(units * (1 - args.mask_ratio))
    print(f"{args.model} {args.img_size}px, mask {args.mask_ratio} ({kept}/{units} units kept), batch "
          f"{args.batch_size}, amp {args.amp}, {where}; median of {args.repeats} steps (fwd+bwd+AdamW):")
    for mode in models:
        print(f"  {mode:>10}: {med[mode] * 1e3:9.1f} ms/step  {args.batch_size / med[mode]:8.1f} img/s  "
              f"(all: {', '.join(f'{t * 1e3:.0f}' for t in times[mode])} ms)")
    best = {mode: min(t) for mode, t in times.items()}  # robust to bursts of load from other jobs
    print(f"  speed-up of visible (GreenMIM MAE) over mask_token (SimMIM): {ratio:.2f}x wall-clock (best steps: "
          f"{best['mask_token'] / best['visible']:.2f}x)", end="")
    # Process CPU time (all threads) is less sensitive to other jobs on a shared CPU; on a GPU it is host time.
    print(f", {ratio_cpu:.2f}x process CPU time" if device.type == "cpu" else "")
    print(json.dumps({"model": args.model, "img_size": args.img_size, "mask_ratio": args.mask_ratio,
                      "batch_size": args.batch_size, "device": where, "amp": args.amp,
                      "median_s": med, "speedup": ratio, "best_s": best,
                      "median_cpu_s": med_cpu, "speedup_cpu": ratio_cpu}))


if __name__ == "__main__":
    main()
