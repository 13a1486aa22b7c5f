"""Process-group setup through accelerate, with the checks that stop a mis-launched run early."""

from __future__ import annotations

import logging
import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from ..checks import expected_world_size
from ..errors import SslabError

log = logging.getLogger("sslab")
PRECISIONS = ("no", "fp16", "bf16")


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
            "would train alone; use launch/slurm.sbatch (one task per GPU, RANK and WORLD_SIZE set from "
            "SLURM's variables), or start one task per node running `torchrun`"
        )


def check_accelerate_simple_launch() -> None:
    """Raise if ``accelerate launch`` was asked for several processes but started this one alone.

    ``accelerate launch --cpu --num_processes 2`` (no ``--multi_cpu``) runs one plain process: it
    sets ``ACCELERATE_USE_CPU`` and, for more than one process, ``MASTER_ADDR``, but no ``WORLD_SIZE``
    (its multi-process launchers always set it, as do torchrun, srun via launch/slurm.sbatch and MPI).
    """
    env = os.environ
    mpi = any(k in env for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    if "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env and not mpi:
        raise SslabError(
            "accelerate launch was asked for several processes but started only this one (with --cpu and no "
            "--multi_cpu it runs a single process); on CPU run `torchrun --nproc_per_node N experiments/...`")


def resolve_precision(requested: str) -> tuple[str, str]:
    """The precision to train in, and where that choice came from.

    Rule: a reduced precision the launcher asked for explicitly wins over the recipe's
    ``mixed_precision`` (and its ``--mixed-precision`` flag). ``accelerate launch --mixed_precision``,
    an accelerate config file and ``ACCELERATE_MIXED_PRECISION`` all arrive here as that variable.
    The launcher's ``no`` counts as unset: accelerate writes ``no`` when nothing was asked, so it
    cannot be told apart; to train a bf16 recipe in fp32, pass ``--mixed-precision no`` to the recipe.
    """
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
    if launcher not in ("", "no"):
        if launcher not in PRECISIONS:
            raise SslabError(f"the launcher asked for mixed precision {launcher!r} (ACCELERATE_MIXED_PRECISION); "
                             f"sslab trains in one of {', '.join(PRECISIONS)}")
        return launcher, f"the launcher's ACCELERATE_MIXED_PRECISION={launcher}; the recipe says {requested}"
    return requested, "the recipe or its --mixed-precision flag"


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for CPU, one GPU or many (gloo on CPU, NCCL on GPUs), in the precision of
    :func:`resolve_precision` (``acc.precision_note`` says which and why, for the run's start).

    Raises (:func:`check_world`) if the launcher started several processes but this one ended up
    alone, or if SLURM started several tasks with no distributed launcher.
    """
    check_accelerate_simple_launch()
    mixed_precision, source = resolve_precision(mixed_precision)
    if mixed_precision not in PRECISIONS:
        raise SslabError(f"mixed_precision {mixed_precision!r} ({source}) is not 'no', 'fp16' or 'bf16'; "
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
    acc.precision_note = f"precision: {({'no': 'fp32'}).get(mixed_precision, mixed_precision)} (from {source})"
    return acc
