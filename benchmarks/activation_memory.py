"""Activation memory of an MAE training step with and without activation checkpointing.

    python benchmarks/activation_memory.py [--model vit_base_patch16_224] [--batches 1,4]
    python benchmarks/activation_memory.py --device cuda        # also: the largest batch that fits

CPU: each (setting, batch) runs in a fresh process that builds the MAE (paper decoder 512 x 8, 75%
masking), takes one forward + backward + fused AdamW step on random 224 px images (which allocates
the optimiser state), resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and takes a
second step, whose peak resident memory (``VmHWM``) it reports. Weights, gradients and optimiser
state do not depend on the batch, so the memory per image is the slope of the peak between the two
batch sizes.
CUDA: the same from ``torch.cuda.max_memory_allocated``, then the batch is doubled until a step
runs out of memory and bisected to the largest one that trains, with and without checkpointing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from sslab.models.execution import set_grad_checkpointing
from sslab.models.mae import create_mae


def one_step(model_name: str, batch: int, checkpointing: bool, device: str) -> dict:
    """Build, step once; returns peak memory (bytes) and the step's time."""
    torch.manual_seed(0)
    model = create_mae(model_name).to(device).train()
    set_grad_checkpointing(model, checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    imgs = torch.randn(batch, 3, model.img_size[0], model.img_size[1], device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss, _, _ = model(imgs, mask_ratio=0.75)
        loss.backward()
        opt.step()
        # Zeroed, not freed: the gradients stay resident, so the step's peak is the activations' peak
        # (else it can fall at the end of the backward, where gradients have replaced activations).
        opt.zero_grad(set_to_none=False)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        return {"peak": torch.cuda.max_memory_allocated(), "seconds": time.perf_counter() - t0}
    step()  # optimiser state allocated, allocator warm
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (Linux >= 4.0)
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return {"peak": int(status["VmHWM"].split()[0]) * 1024, "seconds": seconds}


def cpu_peak(model_name: str, batch: int, checkpointing: bool) -> dict:
    """:func:`one_step` in a fresh interpreter, so that the peak is this step's alone."""
    code = (f"import json, torch; torch.set_num_threads({torch.get_num_threads()}); "
            "from activation_memory import one_step; "
            f"print(json.dumps(one_step({model_name!r}, {batch}, {checkpointing}, 'cpu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/", 1)[0])
    return json.loads(out.stdout.strip().splitlines()[-1])


def fits(model_name: str, batch: int, checkpointing: bool) -> bool:
    try:
        one_step(model_name, batch, checkpointing, "cuda")
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


def largest_batch(model_name: str, checkpointing: bool) -> int:
    lo, hi = 0, 16
    while fits(model_name, hi, checkpointing):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(model_name, mid, checkpointing) else (lo, mid)
    return lo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="1,3", help="two batch sizes; the slope between them is per image")
    args = p.parse_args()
    b1, b2 = (int(x) for x in args.batches.split(","))
    gib = 2 ** 30
    print(f"MAE {args.model}, 224 px, mask 0.75, decoder 512x8, fwd+bwd+fused AdamW, "
          f"{'bf16 autocast on ' + torch.cuda.get_device_name() if args.device == 'cuda' else 'fp32 on CPU'}")
    for ckpt in (False, True):
        if args.device == "cuda":
            r1, r2 = (one_step(args.model, b, ckpt, "cuda") for b in (b1, b2))
            torch.cuda.empty_cache()
        else:
            r1, r2 = (cpu_peak(args.model, b, ckpt) for b in (b1, b2))
        per_image = (r2["peak"] - r1["peak"]) / (b2 - b1)
        line = (f"grad_checkpointing {str(ckpt):<5}  peak {r1['peak'] / gib:.2f} GiB at batch {b1}, "
                f"{r2['peak'] / gib:.2f} GiB at batch {b2}  ->  {per_image / 2 ** 20:.0f} MiB per image "
                f"(step {r2['seconds']:.1f} s at batch {b2})")
        if args.device == "cuda":
            line += f"; largest batch that trains: {largest_batch(args.model, ckpt)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
