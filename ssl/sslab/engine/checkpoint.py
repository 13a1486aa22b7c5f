"""Checkpoints: atomic writes, the last K kept, ``--resume auto``, weights-only loading.

A checkpoint is one file ``checkpoint-<step>.pt`` holding only tensors and plain Python values, so
it loads with ``torch.load(weights_only=True)``, which never runs code from the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..serialization import safe_load
from ..errors import SslabError

CKPT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``run_dir``, oldest first by step."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], run_dir: str | os.PathLike, step: int, keep_last: int) -> Path:
    """Write ``state`` atomically (temp file, fsync, rename), then delete all but the newest ``keep_last``.

    A crash mid-write leaves only a ``.tmp`` file behind; the previous checkpoint is untouched.
    """
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"checkpoint-{step:08d}.pt"
    tmp = d / f".{final.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    if keep_last > 0:
        for old in list_checkpoints(d)[:-keep_last]:
            old.unlink(missing_ok=True)
    return final


def resolve_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """``""`` -> None; ``"auto"`` -> newest checkpoint in ``run_dir`` or None; else the given file."""
    if not resume:
        return None
    if resume == "auto":
        ckpts = list_checkpoints(run_dir)
        return ckpts[-1] if ckpts else None
    p = Path(resume)
    if not p.is_file():
        raise SslabError(f"--resume {resume!r}: no such checkpoint file; use 'auto' or a checkpoint-*.pt path")
    return p


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code (``sslab.serialization.safe_load``); refuses code payloads."""
    return safe_load(path, map_location=map_location)
