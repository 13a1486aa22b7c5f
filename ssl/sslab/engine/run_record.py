"""A run folder that explains itself: ``run.json`` (how each launch was started) and ``console.log``.

``run.json`` holds one entry per launch (a resumed run adds one): the command line, the working
directory, the git commit of the code (and whether it had uncommitted changes), the versions of
the packages that decide the numbers, the host, the process count and the start time.
``console.log`` receives every ``sslab`` log record of the main process (start summary, progress
lines, warnings, the closing summary), appended across launches.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("sslab", "torch", "torchvision", "timm", "accelerate", "numpy", "wandb", "safetensors", "pillow")


def git_state(where: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``where``, or None outside one (or without git)."""
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Installed versions of the packages in :data:`PACKAGES` (those installed), plus Python's."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import torch

    out["cuda"] = torch.version.cuda or "none"
    return out


def launch_record(world_size: int, argv: list[str] | None = None) -> dict[str, Any]:
    """What this launch was: command, cwd, git, versions, host, world size, time."""
    # sys.orig_argv: the command as typed (``python -m sslab train ...`` rewrites sys.argv for the recipe).
    command = shlex.join(argv) if argv is not None else shlex.join(getattr(sys, "orig_argv", sys.argv))
    return {"command": command, "cwd": os.getcwd(),
            "git": git_state(Path(__file__).resolve().parent), "versions": versions(),
            "host": socket.gethostname(), "platform": platform.platform(), "world_size": world_size,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_run_record(run_dir: Path, world_size: int) -> Path:
    """Append this launch to ``<run_dir>/run.json``; returns its path."""
    path = Path(run_dir) / "run.json"
    try:
        launches = json.loads(path.read_text())["launches"]
    except (OSError, ValueError, KeyError):
        launches = []
    path.write_text(json.dumps({"launches": [*launches, launch_record(world_size)]}, indent=2))
    return path


def keep_console_log(run_dir: Path) -> logging.Handler:
    """Copy the ``sslab`` logger's records into ``<run_dir>/console.log``; returns the handler (to remove)."""
    logger = logging.getLogger("sslab")
    for old in [h for h in logger.handlers if getattr(h, "sslab_console_log", False)]:
        logger.removeHandler(old)  # left by a run that ended in an exception: one run folder at a time
        old.close()
    handler = logging.FileHandler(Path(run_dir) / "console.log")
    handler.sslab_console_log = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # the file keeps INFO records even where the console shows fewer
    logger.addHandler(handler)
    return handler
