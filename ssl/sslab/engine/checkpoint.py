"""Checkpoints: atomic writes, the last K kept, ``--resume auto``, weights-only loading.

A checkpoint is one file ``checkpoint-<step>.pt`` holding only tensors and plain Python values, so
it loads with ``torch.load(weights_only=True)``, which never runs code from the file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import SslabError
from ..serialization import UnsafeCheckpointError, safe_load

CKPT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
log = logging.getLogger("sslab")


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
    A full disk (or file-size limit) removes the ``.tmp`` file and raises a one-line
    :class:`SslabError` naming the file and the space it needed.
    """
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"checkpoint-{step:08d}.pt"
    tmp = d / f".{final.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):  # torch's zip writer reports ENOSPC as a RuntimeError
            raise _no_space_error(final, state, e) or e
        raise
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


def state_nbytes(state: Any) -> int:
    """Bytes of tensor data in a nested ``state`` (what a checkpoint of it needs on disk, near enough)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def _no_space_error(final: Path, state: dict[str, Any], err: BaseException) -> SslabError | None:
    """A one-line error when ``err`` (raised while writing ``final``) came from a full disk or a
    file-size limit; None for any other failure."""
    need = state_nbytes(state)
    free = shutil.disk_usage(final.parent).free
    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    os_no_space = isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS
    if not (os_no_space or free < need or 0 <= fsize < need):
        return None
    previous = list_checkpoints(final.parent)
    kept = f"{previous[-1].name} is untouched" if previous else "there is no earlier checkpoint"
    where = (f"the file-size limit (ulimit -f) is {_mb(fsize)}" if 0 <= fsize < need
             else f"{_mb(free)} free on that filesystem")
    return SslabError(
        f"no space to write checkpoint {final}: it needs about {_mb(need)}, {where} (the partial file was "
        f"removed; {kept}); free some space or move --output-dir to a larger disk, then --resume auto"
    )


def check_space_to_continue(run_dir: str | os.PathLike, newest: Path) -> None:
    """Before a resumed run computes anything: refuse, in one line, when the filesystem of ``run_dir``
    cannot hold one more checkpoint of the size of ``newest`` (older ones go only after it is written)."""
    if not Path(run_dir).is_dir():
        return
    need = newest.stat().st_size
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise SslabError(
            f"no space to continue the run in {run_dir}: its next checkpoint needs about {_mb(need)} (the size of "
            f"{newest.name}), {_mb(free)} is free; free some space or move --output-dir to a larger disk"
        )


def find_resume(resume: str, run_dir: str | os.PathLike, report: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """Resolve and load the checkpoint to resume from: ``(path, state)``, or None for a fresh run.

    ``"auto"`` takes the newest checkpoint in ``run_dir`` that reads; each unreadable newer one
    (truncated, corrupt) is reported in one log line and skipped. Code payloads are never skipped
    silently: they raise. An explicit path that does not read raises a one-line :class:`SslabError`.
    """
    path = resolve_resume(resume, run_dir)
    if path is None:
        return None
    candidates = list(reversed(list_checkpoints(run_dir))) if resume == "auto" else [path]
    unreadable: list[tuple[Path, str]] = []
    for p in candidates:
        try:
            state = load_checkpoint(p)
            if not isinstance(state, dict) or "step" not in state or "model" not in state:
                raise RuntimeError("not an sslab training checkpoint (no step/model)")
        except UnsafeCheckpointError:
            raise
        except (SslabError, RuntimeError, OSError) as e:  # safe_load says 'truncated or corrupt' as SslabError
            cause = e.__cause__ or e  # safe_load wraps torch's own words; the path is said already
            why = (str(cause).splitlines() or [type(cause).__name__])[0][:160]
            if resume != "auto":
                raise SslabError(f"--resume {p}: the file is unreadable ({why}); pass another checkpoint "
                                 "or --resume auto") from None
            unreadable.append((p, why))
            continue
        if unreadable and report:  # one line: what was skipped, why, and what is used instead
            names = ", ".join(str(q) for q, _ in unreadable)
            subject = f"checkpoint {names} is" if len(unreadable) == 1 else f"checkpoints {names} are"
            log.warning("%s unreadable (%s); resuming from %s (step %d), the newest readable one",
                        subject, unreadable[0][1], p, int(state["step"]))
        return p, state
    raise SslabError(f"--resume auto: every checkpoint in {run_dir} is unreadable "
                     f"({', '.join(q.name for q, _ in unreadable)}; newest: {unreadable[0][1]}); move them away "
                     "to start afresh, or pass a readable checkpoint to --resume")


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
