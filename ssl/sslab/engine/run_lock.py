"""One run per run directory: a lock file naming its holder (host, pid, start time, SLURM job).

Two runs writing one ``--output-dir`` would overwrite each other's checkpoints, interleave
``metrics.jsonl`` and share a wandb run, so the main process of a run creates ``.sslab.lock``
there (``O_EXCL``: atomic, also on NFS) and removes it when the run ends, however it ends
(normal end, error, stop signal, second Ctrl-C). A lock left behind is taken over when

- its holder was an earlier start of the same SLURM job (same ``SLURM_JOB_ID``, another
  ``SLURM_RESTART_COUNT``): a requeued job is never blocked by itself, on whichever node it ran;
- its holder ran on this host and that process is gone (killed, crashed; a reused pid is told
  apart by the process start time in ``/proc``).

Otherwise the run stops with one line naming the holder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import SslabError

log = logging.getLogger("sslab")
LOCK_NAME = ".sslab.lock"


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5); the name in (...) may hold spaces
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    now = _proc_start(pid)
    return start is None or now is None or now == start


def this_holder() -> dict[str, Any]:
    """What the lock records about this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT", "0")}


def stale_reason(holder: dict[str, Any], me: dict[str, Any]) -> str | None:
    """Why ``holder``'s lock may be taken over by ``me`` (a sentence), or None if it is held."""
    if (holder.get("slurm_job_id") and holder["slurm_job_id"] == me["slurm_job_id"]
            and holder.get("slurm_restart_count") != me["slurm_restart_count"]):
        return f"left by an earlier start of SLURM job {holder['slurm_job_id']} (this is a requeue)"
    if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1)), holder.get("proc_start")):
        return f"left by pid {holder.get('pid')} on this host, which is no longer running"
    return None


class RunLock:
    """The lock on one run directory; :meth:`release` is idempotent and removes only our own lock."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.me = this_holder()
        self.held = False

    def acquire(self) -> "RunLock":
        """Take the lock, or raise :class:`SslabError` naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):  # a concurrent take-over may win the rename race; then look again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # removed meanwhile
                if not holder and attempt < 4:
                    time.sleep(0.1)  # being written right now
                    continue
                reason = stale_reason(holder, self.me) if holder else "an unreadable, empty lock file"
                if reason is None:
                    raise SslabError(
                        f"run directory {self.path.parent} is in use by pid {holder.get('pid')} on host "
                        f"{holder.get('host')} since {holder.get('started')} (lock {self.path}); choose another "
                        "--output-dir, or delete that lock file if the run is gone") from None
                aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
                try:  # rename is atomic: of two processes taking over, one wins
                    os.rename(self.path, aside)
                except FileNotFoundError:
                    continue
                if self._read(aside) != holder:  # we moved the winner's fresh lock: put it back
                    try:
                        os.link(aside, self.path)
                    except FileExistsError:
                        pass
                    os.unlink(aside)
                    continue
                os.unlink(aside)
                log.info("took over the lock of %s: %s", self.path.parent, reason)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            self.held = True
            return self
        raise SslabError(f"could not take the lock {self.path}: other processes keep changing it; "
                         "make sure only one run uses this --output-dir")

    def _read(self, path: Path | None = None) -> dict[str, Any] | None:
        """The holder's record; None if there is no lock file, {} if it cannot be read."""
        try:
            holder = json.loads((path or self.path).read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder and holder.get("pid") == self.me["pid"] and holder.get("host") == self.me["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
