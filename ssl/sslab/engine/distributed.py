"""Process-group setup through accelerate, with the checks that stop a mis-launched run early."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from ..checks import expected_world_size
from ..errors import SslabError

__all__ = ["check_world", "expected_world_size", "make_accelerator"]


def check_world(expected: int, actual: int, distributed_type: object) -> None:
    """Raise if the launcher asked for ``expected`` processes but the process group has ``actual``."""
    if expected > 1 and actual != expected:
        raise SslabError(
            f"this process was launched as one of WORLD_SIZE={expected} but accelerate set up "
            f"{actual} process(es) ({distributed_type}): each copy would train alone on the same data and "
            "write the same checkpoints; on a machine without GPUs use "
            "`torchrun --nproc_per_node N experiments/...` (gloo); on GPUs use `accelerate launch`."
        )
    steps = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if steps > 1 and "WORLD_SIZE" not in os.environ:
        raise SslabError(
            f"started by srun as one of {steps} SLURM tasks without a distributed launcher, so every task "
            "would train alone; start one task per node running `accelerate launch` or `torchrun` "
            "(see launch/slurm_mae_vitb.sbatch)"
        )


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for CPU, one GPU or many (gloo on CPU, NCCL on GPUs).

    Raises (:func:`check_world`) if the launcher started several processes but this one ended up
    alone, or if SLURM started several tasks with no distributed launcher.
    """
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise SslabError(f"mixed_precision {mixed_precision!r} is not 'no', 'fp16' or 'bf16'; "
                         "pass --mixed-precision no, fp16 or bf16")
    cuda = torch.cuda.is_available()
    if mixed_precision == "fp16" and not cuda:
        raise SslabError("mixed_precision 'fp16' needs a CUDA GPU; on CPU use 'bf16' or 'no'")
    # cpu=True when there is no GPU makes torchrun / accelerate launch use gloo data parallelism
    # instead of silently starting independent single-process copies.
    # A second run in the same Python process (a notebook, a sweep) may ask for another precision;
    # accelerate keeps its state in a singleton, so clear it (the process group itself is kept).
    AcceleratorState._reset_state()
    acc = Accelerator(cpu=not cuda, mixed_precision=mixed_precision)
    check_world(expected_world_size(), acc.num_processes, acc.distributed_type)
    return acc
