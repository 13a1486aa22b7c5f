"""Where images come from: ``--data`` names the embedded demo set, an ImageFolder tree or a tar of one.

- ``demo`` (or ``demo:test``): the Fashion-MNIST subset shipped in the package (MIT licensed).
- ``cifar10`` / ``fashion-mnist`` (or ``NAME:test``): fetched once by torchvision into the cache
  (:mod:`.named`).
- a directory: an ImageFolder tree; if it holds a ``<split>`` sub-folder (``train``, ``test``,
  ``val``), that one is used.
- a ``.tar``/``.tar.gz`` of such a tree (e.g. the shared CIFAR-10 JPEG tar): unpacked once into
  the cache (``$SSLAB_CACHE``, default ``~/.cache/sslab``), never next to the data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np

from .image_folder import ImageFolder
from .in_memory import InMemoryImages, load_folder_in_memory
from .named import is_named, load_named

DEMO_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def cache_dir() -> Path:
    """The git-ignored cache where tars are unpacked and decoded arrays kept."""
    return Path(os.environ.get("SSLAB_CACHE", Path.home() / ".cache" / "sslab"))


def load_demo(split: str = "train", channels: int = 1) -> InMemoryImages:
    """The embedded Fashion-MNIST demo set: 28x28 uint8 images, ``channels`` 1 or 3 (gray repeated)."""
    if split not in ("train", "test"):
        raise ValueError(f"the demo set has splits 'train' and 'test', not {split!r}")
    with resources.files("sslab.data").joinpath("demo/fashion_mnist_demo.npz").open("rb") as f, np.load(f) as z:
        images, labels = z[f"{split}_images"][:, None], z[f"{split}_labels"]
    if channels not in (1, 3):
        raise ValueError(f"the demo set is grayscale: use in_chans 1 or 3, not {channels}")
    return InMemoryImages(np.repeat(images, channels, axis=1), labels, DEMO_CLASSES)


def unpack_tar(path: Path) -> Path:
    """Unpack a tar once into the cache (atomically) and return the folder."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    name = path.name
    for suffix in TAR_SUFFIXES:
        name = name.removesuffix(suffix)
    out = cache_dir() / f"{name}-{key}"
    if out.is_dir():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(path) as tar:
        tar.extractall(tmp, filter="data")  # "data" refuses absolute paths, links out of the tree
    try:
        os.replace(tmp, out)
    except OSError:  # another process unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_split(root: Path, split: str) -> Path:
    """Descend single-folder wrappers, then into ``<split>`` if the tree has one."""
    while True:
        if (root / split).is_dir():
            return root / split
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
            continue
        return root


def open_images(spec: str, split: str = "train", in_memory: bool = False, channels: int = 3,
                skip_bad_files: bool = False):
    """Return a dataset of ``(image, label)`` for ``--data spec`` (PIL images, or uint8 tensors in memory)."""
    if spec == "demo" or spec.startswith("demo:"):
        return load_demo(spec.partition(":")[2] or split, channels)
    path = Path(spec).expanduser()
    if not path.exists() and is_named(spec):  # a local folder of that name wins
        return load_named(spec, split, channels, cache_dir())
    if not path.exists():
        raise FileNotFoundError(
            f"--data {spec!r} does not exist; give an ImageFolder directory, a .tar of one, 'demo', 'cifar10' "
            "or 'fashion-mnist'"
        )
    if path.is_file():
        if not path.name.endswith(TAR_SUFFIXES):
            raise ValueError(f"--data {spec!r} is a file but not a tar ({', '.join(TAR_SUFFIXES)})")
        path = unpack_tar(path)
    root = resolve_split(path, split)
    if in_memory:
        return load_folder_in_memory(root, cache_dir(), skip_bad_files)
    return ImageFolder(root)
