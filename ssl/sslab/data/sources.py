"""Where images come from: ``--data`` names the embedded demo set, an ImageFolder tree or a tar of one.

- ``demo`` (or ``demo:test``): the Fashion-MNIST subset shipped in the package (MIT licensed).
- ``cifar10`` / ``fashion-mnist`` (or ``NAME:test``): fetched once by torchvision into the cache
  (:mod:`.named`); held-out split ``test``.
- a directory: an ImageFolder tree with split folders (``root/train/<class>/...``,
  ``root/test/...`` or ``root/val/...``); the training split is ``train``, the held-out split
  ``test``, else ``val`` (:func:`resolve_split`). ``spec:NAME`` names a split folder explicitly.
  Only pretraining reads a tree without split folders (all of it is training data).
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

from ..errors import SslabError
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


SPLIT_NAMES = ("train", "val", "test")   # folder names that mark a tree with splits
HELD_OUT = ("test", "val")               # the held-out split: ``test``, else ``val``
# ``split`` arguments besides a folder name: the held-out rule, or the folder as given (the whole of it).
HELD_OUT_SPLIT, WHOLE = "held_out", "all"


def _listing(root: Path) -> str:
    """Up to 8 sub-folder names of ``root`` for an error message."""
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return "[" + ", ".join(dirs[:8]) + (", ..." if len(dirs) > 8 else "") + "]" if dirs else "no sub-folders"


def _descend_wrappers(root: Path) -> Path:
    """Skip single-folder wrappers (``CIFAR-10-images/`` inside a tar) down to the folder that has splits
    or classes; a lone folder named like a split is a split, not a wrapper."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in SPLIT_NAMES \
                and any(q.is_dir() for q in entries[0].iterdir()):
            root = entries[0]
            continue
        return root


def resolve_split(root: Path, split: str, spec: str | None = None, flat_ok: bool = False) -> Path:
    """The folder of ``split`` in the tree at ``root``.

    ``split`` is a folder name (``train``, ``test``, ``val`` or any other), ``"held_out"`` (``test``,
    else ``val``) or ``"all"`` (``root`` itself, whose sub-folders must then be classes, not splits).
    A tree that lacks the split is an error listing what it has, never a silent use of the root:
    scoring a model on ``root`` would make ``train``/``val`` the classes. ``flat_ok`` (pretraining
    data) lets ``train`` be the root of a tree with no split folders at all.
    """
    name = spec or str(root)
    root = _descend_wrappers(root)
    splits_here = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    if split == WHOLE:
        if splits_here:
            raise SslabError(f"{name!r} holds split folders {splits_here}, not classes; give one split as "
                             f"'{name}:{splits_here[0]}', or --data {name} for its train and test/val splits")
        return root
    if split == HELD_OUT_SPLIT:
        for s in HELD_OUT:
            if (root / s).is_dir():
                return root / s
        raise SslabError(f"--data {name!r} has no held-out split ('test' or 'val'), it has {_listing(root)}; "
                         f"give the held-out images as --test-data PATH (a folder of class folders) or "
                         f"'{name}:FOLDER'")
    if (root / split).is_dir():
        return root / split
    if flat_ok and split == "train" and not splits_here:
        return root  # pretraining on a folder of class folders (or one folder of images): all of it trains
    raise SslabError(f"--data {name!r} has no '{split}' folder, it has {_listing(root)}; give that split as "
                     f"--{'train' if split == 'train' else 'test'}-data PATH (a folder of class folders) or "
                     f"'{name}:FOLDER'")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"root:val"`` -> ``("root", "val")``; a spec without a ``:split`` suffix (or an existing path
    that contains a colon) -> ``(spec, None)``."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and "/" not in tail and not Path(spec).expanduser().exists():
        return head, tail
    return spec, None


def locate_split(spec: str, split: str = "train", flat_ok: bool = True) -> tuple[str, Path | None]:
    """``(split name, folder)`` that ``open_images(spec, split)`` reads: the split's folder name (``"val"``
    when the held-out rule found ``val``; ``"all"`` for a folder used whole) and its path (None for the
    demo set). A ``spec:NAME`` suffix names the split folder and wins over ``split``."""
    spec_path, named = parse_spec(spec)
    if named is not None:
        split, flat_ok = named, False
    path = Path(spec_path).expanduser()
    if spec_path == "demo" or (not path.exists() and is_named(spec_path)):  # a local folder of that name wins
        fixed = {HELD_OUT_SPLIT: "test"}.get(split, split)
        fixed = "test" if fixed == "val" and spec_path != "demo" else fixed  # named sets: 'val' means 'test'
        if fixed not in ("train", "test"):
            raise SslabError(f"--data {spec_path!r} has splits 'train' and 'test', not {split!r}; use "
                             f"{spec_path}:train or {spec_path}:test")
        return fixed, None
    if not path.exists():
        raise FileNotFoundError(f"--data {spec_path!r} does not exist; give an ImageFolder directory, a .tar of "
                                "one, 'demo', 'cifar10' or 'fashion-mnist'")
    if path.is_file():
        if not path.name.endswith(TAR_SUFFIXES):
            raise SslabError(f"--data {spec_path!r} is a file but not a tar ({', '.join(TAR_SUFFIXES)}); give an "
                             "ImageFolder directory or a tar of one")
        path = unpack_tar(path)
    folder = resolve_split(path, split, spec_path, flat_ok)
    top = _descend_wrappers(path)
    return (folder.name if folder != top else WHOLE), folder


def open_images(spec: str, split: str = "train", in_memory: bool = False, channels: int = 3,
                skip_bad_files: bool = False, flat_ok: bool = True, encoded: bool = False):
    """Return a dataset of ``(image, label)`` for ``--data spec`` (PIL images, or uint8 tensors in memory;
    with ``encoded``, files that are not held in memory come as paths for the transform to decode).

    ``split`` follows :func:`resolve_split`; a ``spec:NAME`` suffix names the split folder explicitly
    and wins over ``split`` (``demo:test``, ``/data/imagenet:val``, ``cifar.tar:test``). ``flat_ok``
    (pretraining's default) reads a tree without split folders whole as ``train``; the evaluators pass
    False, since a labelled evaluation needs a real training split and a disjoint held-out one.
    """
    name, folder = locate_split(spec, split, flat_ok)
    if folder is None:
        base = parse_spec(spec)[0]
        return load_demo(name, channels) if base == "demo" else load_named(base, name, channels, cache_dir())
    if in_memory:
        return load_folder_in_memory(folder, cache_dir(), skip_bad_files)
    return ImageFolder(folder, encoded=encoded)
