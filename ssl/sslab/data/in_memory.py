"""Small datasets held in memory as uint8: no decoding per step, the fast path for CIFAR/MNIST-size data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import SslabError
from .file_check import bad_files_error, report_skipped
from .image_folder import BadImageError, ImageFolder, load_image


class InMemoryImages:
    """uint8 images (N, C, H, W) and int labels (N,); items are ``(uint8 (C, H, W) tensor, label)``."""

    def __init__(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                 classes: list[str] | None = None):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = torch.as_tensor(labels).long()
        self.classes = classes or [str(i) for i in range(int(self.labels.max()) + 1)]
        self.bad_files: list[tuple[str, str]] = []   # (path, reason) of files left out (--skip-bad-files)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def load_folder_in_memory(root: str | os.PathLike, cache_dir: Path, skip_bad_files: bool = False,
                          channels: int = 3) -> InMemoryImages:
    """Decode an ImageFolder once into uint8 arrays (N, ``channels``, H, W) cached as ``.npz``; all images
    must share one size. Every undecodable file is named: in one error, or (``skip_bad_files``) once each
    in the log, left out and listed in ``bad_files``."""
    folder = ImageFolder(root, channels)
    stamp = f"{Path(root).resolve()}|{len(folder)}|{os.stat(folder.samples[-1][0]).st_mtime_ns}|{channels}"
    cache = cache_dir / f"inmem-{Path(root).name}-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}.npz"
    if cache.exists():
        with np.load(cache) as z:
            out = InMemoryImages(z["images"], z["labels"], folder.classes)
            bad = [tuple(b) for b in z["bad"].tolist()] if "bad" in z else []
        out.bad_files = bad  # type: ignore[assignment]
        if bad and not skip_bad_files:  # cached by an earlier run that skipped them
            raise bad_files_error(root, bad, len(folder), cache_dir)
        report_skipped(out.bad_files, len(folder))
        return out
    images, labels, size, bad = [], [], None, []
    for path, label in folder.samples:
        try:
            arr = np.asarray(load_image(path, channels))
        except BadImageError as e:
            bad.append((e.path, e.reason))
            continue
        if size is None:
            size = arr.shape
        elif arr.shape != size:
            raise SslabError(
                f"in-memory loading needs images of one size: {path} is {arr.shape[1]}x{arr.shape[0]}, "
                f"others {size[1]}x{size[0]}; use --in-memory false for mixed sizes"
            )
        images.append(arr.reshape(arr.shape[0], arr.shape[1], -1))
        labels.append(label)
    if bad and not skip_bad_files:
        raise bad_files_error(root, bad, len(folder), cache_dir)
    if not images:
        raise SslabError(f"none of the {len(folder)} image files under {root} can be decoded; point --data at "
                         "readable images")
    report_skipped(bad, len(folder))
    x = np.stack(images).transpose(0, 3, 1, 2).copy()
    y = np.asarray(labels, dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, images=x, labels=y, bad=np.asarray(bad, dtype=str).reshape(-1, 2))
    os.replace(tmp, cache)
    out = InMemoryImages(x, y, folder.classes)
    out.bad_files = bad
    return out
