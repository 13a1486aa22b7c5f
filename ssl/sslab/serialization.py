"""Loading weight files without executing code from them.

Every checkpoint or weight file sslab reads goes through :func:`safe_load`: ``.safetensors`` files
are read with ``safetensors.torch`` (a JSON header and raw tensor bytes, nothing to execute), every
other file with ``torch.load(weights_only=True)``, whose unpickler only rebuilds tensors, plain
containers and numbers. A pickle that names any other callable (the ``__reduce__`` trick behind
pickle code payloads) is refused before that callable is ever looked up, and the error names the file.

The only extra type allowed is :class:`argparse.Namespace`: the official MAE and DINO training
checkpoints store their command-line ``args`` as one, and rebuilding it only sets attributes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from .errors import SslabError

# Harmless types official checkpoints carry (MAE main_pretrain.py / DINO main_dino.py save `args`).
SAFE_EXTRA_TYPES: tuple[type, ...] = (argparse.Namespace,)


class UnsafeCheckpointError(SslabError):
    """A weight file that would need to run code (an object other than tensors/plain values) to load."""


def _is_safetensors(path: Path) -> bool:
    """By suffix, or by content: an 8-byte little-endian header length followed by a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def _what_it_asks_for(path: Path, err: Exception) -> str:
    """The callables/classes a refused file names, read statically (nothing is unpickled)."""
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in SAFE_EXTRA_TYPES}
    try:
        if zipfile.is_zipfile(path):  # torch.save format: list the pickle's GLOBALs without running it
            names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in allowed]
            if names:
                return "it asks for " + ", ".join(sorted(names))
    except Exception:  # a damaged archive: fall back to torch's own words
        pass
    m = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", str(err), re.S)
    return "the unpickler stopped at: " + (m.group(1).strip()[:300] if m else type(err).__name__)


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a weight file without executing code: safetensors -> dict of tensors, else ``torch.load``
    with ``weights_only=True`` (tensors, dicts, lists, numbers, strings, ``argparse.Namespace``).

    Raises :class:`UnsafeCheckpointError` naming the file when it holds anything else (e.g. a pickled
    code payload); nothing from such a file runs.
    """
    p = Path(path)
    if not p.is_file():
        raise SslabError(f"no weight file at {p}; check the path (a checkpoint-*.pt, exported folder or release file)")
    if _is_safetensors(p):
        from safetensors.torch import load_file

        return load_file(str(p), device=str(map_location))
    # torch < 2.5 has no allow-list: there official checkpoints with `args` are refused (the safe side).
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow(list(SAFE_EXTRA_TYPES)) if allow else contextlib.nullcontext():
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refusing to load {p}: it is not a weights-only file, {_what_it_asks_for(p, e)}, which could run "
            "code, and sslab never unpickles arbitrary objects; if you trust where the file comes from, load it "
            "yourself with torch.load(weights_only=False) and re-save its tensors with safetensors.torch.save_file"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:  # truncated or corrupt files
        raise SslabError(f"cannot read weight file {p} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "the file is truncated or corrupt: copy or download it again") from e
