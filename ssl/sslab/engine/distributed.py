"""Process-group setup through accelerate, with the checks that stop a mis-launched run early."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator


def expected_world_size() -> int:
    """The process count the launcher asked for (torchrun / accelerate / SLURM-via-torchrun env)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for CPU, one GPU or many (gloo on CPU, NCCL on GPUs).

    Raises if the launcher started several processes (``WORLD_SIZE > 1``) but this one ended up
    alone, which is what ``accelerate launch --multi_gpu`` does on a machine without GPUs: each
    copy would silently train on its own and write the same checkpoints.
    """
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    cuda = torch.cuda.is_available()
    if mixed_precision == "fp16" and not cuda:
        raise ValueError("mixed_precision 'fp16' needs a CUDA GPU; on CPU use 'bf16' or 'no'")
    acc = Accelerator(cpu=not cuda, mixed_precision=mixed_precision)
    want = expected_world_size()
    if want > 1 and acc.num_processes != want:
        raise RuntimeError(
            f"this process was launched as one of WORLD_SIZE={want} but accelerate set up "
            f"{acc.num_processes} process(es) ({acc.distributed_type}). On a machine without GPUs, "
            "`accelerate launch --multi_gpu` starts independent copies; use "
            "`torchrun --nproc_per_node N experiments/...` (gloo on CPU) or a GPU machine."
        )
    return acc
