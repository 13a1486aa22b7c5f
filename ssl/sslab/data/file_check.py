"""Check every image file of a dataset before compute: header, size and trailer, in parallel, cached.

Decoding every image up front would cost as much as an epoch; reading the header (PIL's ``open``
parses it without decoding pixels: format, width, height, and the decompression-bomb limit) and
the file's last bytes (a JPEG ends with the EOI marker, a PNG with its IEND chunk, a GIF with
``;``) finds unreadable, empty, truncated and oversized files at a small fraction of that cost.
Worker processes share the files between the cores. The result is cached per dataset under a key of every file's path, size and modification time,
so a second run over an unchanged dataset pays only for the ``stat`` calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from ..errors import SslabError, is_rank_zero
from .image_folder import DECODE_ERRORS, describe_decode_error

log = logging.getLogger(__name__)

TAIL_BYTES = 1024     # a JPEG may carry a few bytes of padding after its EOI marker
TRAILERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND", "GIF": b";"}
PARALLEL_MIN_FILES = 4000   # below this, starting worker processes costs more than it saves
CHUNK_FILES = 1000
MAX_NAMED = 10        # bad files named in the one-line error; all of them are in the listing file


def check_file(path: str) -> str | None:
    """Why ``path`` cannot be a training image, or None if its header and trailer look whole."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return "empty file"
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
            f.seek(0)
            with Image.open(f) as img:  # parses the header only; raises DecompressionBombError if too large
                fmt = img.format
                width, height = img.size
        if width < 1 or height < 1:
            return f"image size {width}x{height}"
        if fmt in TRAILERS and TRAILERS[fmt] not in tail.rstrip(b"\x00\r\n "):
            return f"truncated {fmt} file ({size} bytes, no end marker)"
    except DECODE_ERRORS as e:
        return describe_decode_error(e)
    return None


def _check_chunk(paths: list[str]) -> list[str | None]:
    return [check_file(p) for p in paths]


def _stamp(paths: list[str]) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def find_bad_files(paths: list[str], cache_dir: Path, name: str = "data", workers: int | None = None
                   ) -> list[tuple[str, str]]:
    """``(path, reason)`` for every file of ``paths`` that fails :func:`check_file`, cached under ``cache_dir``.

    Processes, not threads: PIL's header parsing is Python code that holds the GIL (threads measured
    slower than one loop). Small datasets are checked in this process.
    """
    cache = cache_dir / "file-checks" / f"{name}-{_stamp(paths)}.json"
    if cache.is_file():
        try:
            return [tuple(b) for b in json.loads(cache.read_text())["bad"]]  # type: ignore[misc]
        except (json.JSONDecodeError, KeyError):
            pass  # a damaged cache file is simply redone
    reasons = _run_checks(paths, workers or len(os.sched_getaffinity(0)))
    bad = [(p, r) for p, r in zip(paths, reasons) if r is not None]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"files": len(paths), "bad": bad}, indent=0))
    os.replace(tmp, cache)  # atomic: processes of one launch may write it at once
    return bad


def _run_checks(paths: list[str], workers: int) -> list[str | None]:
    if workers <= 1 or len(paths) < PARALLEL_MIN_FILES or "fork" not in multiprocessing.get_all_start_methods():
        return _check_chunk(paths)
    chunks = [paths[i:i + CHUNK_FILES] for i in range(0, len(paths), CHUNK_FILES)]
    # fork, as torch's DataLoader workers: the children only read files with PIL (no CUDA, no torch), and
    # start at once, where spawned ones would import the package (and torch) again.
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("fork")) as pool:
        return [r for part in pool.map(_check_chunk, chunks) for r in part]


def bad_files_error(root: str | os.PathLike, bad: list[tuple[str, str]], total: int, cache_dir: Path) -> SslabError:
    """One line naming the bad files (all of them in a listing file when there are more than ``MAX_NAMED``)."""
    named = ", ".join(f"{p} ({r})" for p, r in bad[:MAX_NAMED])
    more = ""
    if len(bad) > MAX_NAMED:
        listing = cache_dir / "file-checks" / f"bad-files-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{p}\t{r}\n" for p, r in bad))
        more = f" and {len(bad) - MAX_NAMED} more (all listed in {listing})"
    return SslabError(f"{len(bad)} of {total} image files under {root} cannot be read: {named}{more}; remove or fix "
                      "them, or pass --skip-bad-files true to leave them out (they are counted in the log)")


def report_skipped(bad: list[tuple[str, str]], total: int) -> None:
    """Log each left-out file once, and the total (rank 0 only: one message per run, not per process)."""
    if not bad or not is_rank_zero():
        return
    for p, r in bad:
        log.warning("skipping unreadable image %s: %s", p, r)
    log.warning("skipped %d of %d image files (--skip-bad-files true)", len(bad), total)
