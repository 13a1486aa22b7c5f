"""Small datasets held in memory as uint8: no decoding per step, the fast path for CIFAR/MNIST-size data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from .image_folder import BadImageError, ImageFolder, load_rgb


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

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def load_folder_in_memory(root: str | os.PathLike, cache_dir: Path, skip_bad_files: bool = False) -> InMemoryImages:
    """Decode an ImageFolder once into uint8 arrays cached as ``.npz`` (all images must share one size)."""
    folder = ImageFolder(root)
    stamp = f"{Path(root).resolve()}|{len(folder)}|{os.stat(folder.samples[-1][0]).st_mtime_ns}"
    cache = cache_dir / f"inmem-{Path(root).name}-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return InMemoryImages(z["images"], z["labels"], folder.classes)
    images, labels, size = [], [], None
    for path, label in folder.samples:
        try:
            arr = np.asarray(load_rgb(path))
        except BadImageError:
            if skip_bad_files:
                continue
            raise
        if size is None:
            size = arr.shape
        elif arr.shape != size:
            raise ValueError(
                f"in-memory loading needs images of one size: {path} is {arr.shape[1]}x{arr.shape[0]}, "
                f"others {size[1]}x{size[0]}; use --in-memory false for mixed sizes"
            )
        images.append(arr)
        labels.append(label)
    x = np.stack(images).transpose(0, 3, 1, 2).copy()
    y = np.asarray(labels, dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=x, labels=y)
    os.replace(tmp, cache)
    return InMemoryImages(x, y, folder.classes)
