"""Named datasets users have without our shared files: ``--data cifar10`` / ``--data fashion-mnist``.

On first use torchvision's own downloader fetches the official files into ``$SSLAB_CACHE/torchvision``
(checked against torchvision's md5 sums); the split is then kept as uint8 arrays in
``$SSLAB_CACHE/named/<name>-<split>.npz``, which later runs read directly (no torchvision, no network).
Splits: ``train`` and ``test`` (``val`` means ``test``). ``--data cifar10:test`` picks a split.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import SslabError
from .in_memory import InMemoryImages

log = logging.getLogger("sslab")

CLASSES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle-boot"],
}
CHANNELS = {"cifar10": 3, "fashion-mnist": 1}


def is_named(spec: str) -> bool:
    """Whether ``--data spec`` names one of :data:`CLASSES` (``name`` or ``name:split``)."""
    return spec.partition(":")[0].lower() in CLASSES


def _torchvision_arrays(name: str, train: bool, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, C, H, W), int64 (N,)) through torchvision, downloading into ``root`` if missing."""
    from torchvision import datasets

    if name == "cifar10":
        ds = datasets.CIFAR10(str(root), train=train, download=True)
        return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets, dtype=np.int64)
    ds = datasets.FashionMNIST(str(root), train=train, download=True)
    return ds.data.numpy()[:, None].copy(), ds.targets.numpy().astype(np.int64)


def load_named(spec: str, split: str, channels: int, cache: Path) -> InMemoryImages:
    """The named dataset ``spec`` (split from ``spec`` or ``split``) with ``channels`` channels, from the cache."""
    name, _, explicit = spec.partition(":")
    name, split = name.lower(), (explicit or split)
    split = "test" if split == "val" else split
    if split not in ("train", "test"):
        raise SslabError(f"--data {spec!r}: {name} has splits 'train' and 'test', not {split!r}; use {name}:test")
    native = CHANNELS[name]
    if channels not in (native, 3):
        raise SslabError(f"--data {name} has {native}-channel images, in_chans is {channels}; "
                         f"use --in-chans {native} (and {native} mean/std values)")
    path = cache / "named" / f"{name}-{split}.npz"
    if not path.exists():
        log.info("%s %s: not in %s yet, fetching it once with torchvision's downloader", name, split, path)
        try:
            x, y = _torchvision_arrays(name, split == "train", cache / "torchvision")
        except (OSError, RuntimeError) as e:
            raise SslabError(f"--data {name}: could not get it with torchvision ({type(e).__name__}: {e}); check the "
                             "network, or give an ImageFolder directory or .tar with --data") from e
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=x, labels=y)
        os.replace(tmp, path)
    with np.load(path) as z:
        x, y = z["images"], z["labels"]
    if channels != x.shape[1]:  # grayscale repeated to RGB, as the demo set
        x = np.repeat(x, channels, axis=1)
    return InMemoryImages(x, y, CLASSES[name])


def local_or_named(shared_relpath: str, name: str, recipe_file: str | os.PathLike) -> str:
    """``--data`` default of a recipe: the development copy ``shared/data/<shared_relpath>`` beside the
    project (the project is the recipe's parent folder) or beside the working directory when one is
    there, else the named dataset ``name`` (fetched once into the cache), so a fresh clone runs as is."""
    project = Path(recipe_file).resolve().parents[1]
    for shared in (project.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if (shared / shared_relpath).exists():
            return str(shared / shared_relpath)
    return name
