"""Cost of checking every image file before training (``sslab.data.file_check``), per 100k files.

    python benchmarks/file_check_speed.py [--data ../shared/data/cifar10/CIFAR-10-images-jpeg.tar]
    python benchmarks/file_check_speed.py --make 100000      # synthetic 32x32 JPEGs in a temp folder

Measures on the same files in one run, alternating: the pre-check in one process and with one
worker process per core (wall and CPU time), the second run (cache hit: one ``stat`` per file),
and for scale a full decode of a sample of the files (what finding bad files by decoding them all
would cost). Files are read through the OS page cache as the machine has them (just unpacked or
written, so warm): the figure is the CPU side; a cold network disk adds its own latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ssl"))

from sslab.data.file_check import _run_checks, find_bad_files  # noqa: E402
from sslab.data.image_folder import ImageFolder, load_image  # noqa: E402
from sslab.data.sources import resolve_split, unpack_tar  # noqa: E402


def make_folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    t_children = os.times().children_user + os.times().children_system
    fn()
    cpu = time.process_time() - c + os.times().children_user + os.times().children_system - t_children
    return time.perf_counter() - w, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/cifar10/CIFAR-10-images-jpeg.tar")
    ap.add_argument("--make", type=int, default=0, help="write this many synthetic JPEGs instead of --data")
    ap.add_argument("--decode-sample", type=int, default=5000, help="files fully decoded for comparison")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    if args.make:
        root = make_folder(Path(tmp.name) / "images", args.make)
    else:
        path = Path(args.data)
        root = resolve_split(unpack_tar(path) if path.is_file() else path, "train")
    paths = [p for p, _ in ImageFolder(root).samples]
    n, cores = len(paths), len(os.sched_getaffinity(0))
    per = 100_000 / n
    print(f"{n} files under {root}, {cores} CPU cores, load average {os.getloadavg()[0]:.1f}")
    for rep in range(2):
        for label, workers in (("one process", 1), (f"{cores} processes", cores)):
            wall, cpu = timed(lambda: _run_checks(paths, workers))
            print(f"[{rep}] pre-check, {label:12s}: {wall:6.2f} s wall, {cpu:6.2f} s CPU -> "
                  f"{wall * per:5.1f} s wall per 100k files")
    cache = Path(tmp.name) / "cache"
    find_bad_files(paths, cache, "bench")
    wall, cpu = timed(lambda: find_bad_files(paths, cache, "bench"))
    print(f"pre-check, cached (second run): {wall:.2f} s -> {wall * per:.1f} s per 100k files")
    sample = paths[: args.decode_sample]
    wall, cpu = timed(lambda: [load_image(p, 3) for p in sample])
    print(f"full decode, one process, {len(sample)} files: {wall / len(sample) * 1e5:.1f} s wall per 100k files")
    tmp.cleanup()


if __name__ == "__main__":
    main()
