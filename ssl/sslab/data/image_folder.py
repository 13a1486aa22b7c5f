"""ImageFolder trees (ImageNet layout: ``root/<class>/<image>``) decoded with PIL in the recipe's
channel count: 1 (grayscale, ``L``) or 3 (``RGB``), whatever the file's own mode."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import SslabError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
CHANNEL_MODES = {1: "L", 3: "RGB"}
# What PIL raises for a file it cannot read: unknown format, truncated data, bad header fields, and
# DecompressionBombError (an Exception of its own) for an image over 2 x Image.MAX_IMAGE_PIXELS.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class BadImageError(SslabError):
    """An image file that could not be decoded; ``path`` and ``reason`` name the file and the cause."""

    def __init__(self, path: str | os.PathLike, reason: str | None = None):
        if reason is None:  # re-raised by a DataLoader from a worker: the message is the worker's whole text
            self.path, self.reason = "", ""
            super().__init__(str(path))
            return
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot decode image {path}: {reason}; remove or fix the file, or pass "
                         "--skip-bad-files true to leave undecodable files out (they are counted in the log)")

    def __reduce__(self):  # DataLoader workers pickle errors back to the main process
        return BadImageError, (self.path, self.reason)


def describe_decode_error(e: BaseException) -> str:
    """A short cause for a PIL error (the decompression-bomb one says which limit and how to raise it)."""
    if isinstance(e, Image.DecompressionBombError):
        m = re.search(r"\((\d+) pixels\)", str(e))
        return (f"decompression bomb: {m.group(1) if m else 'too many'} pixels, over PIL's limit of "
                f"{2 * Image.MAX_IMAGE_PIXELS} = 2 x PIL.Image.MAX_IMAGE_PIXELS")
    if isinstance(e, UnidentifiedImageError):
        return "not an image PIL can read"  # PIL's own message repeats the path
    return str(e) or type(e).__name__


def check_channels(channels: int) -> str:
    """The PIL mode for ``channels`` (1 or 3); anything else is a one-line error."""
    if channels not in CHANNEL_MODES:
        raise SslabError(f"in_chans {channels} is not supported: images are loaded as grayscale (1) or RGB (3); "
                         "pass --in-chans 1 or --in-chans 3")
    return CHANNEL_MODES[channels]


Draft = Callable[[int, int], "tuple[int, int] | None"]


def load_image(path: str | os.PathLike, channels: int = 3, draft: Draft | None = None) -> Image.Image:
    """Decode any PIL-readable image (grayscale, palette, RGBA, CMYK, 16-bit...) to 8-bit ``L`` (1 channel)
    or ``RGB`` (3 channels); raises :class:`BadImageError` naming the file.

    ``draft`` is called with the full (width, height) before decoding; if it returns a size, a JPEG
    is decoded at the smallest 1/2, 1/4 or 1/8 scale still at least that size (other formats in full).
    """
    mode = check_channels(channels)
    try:
        with Image.open(path) as img:
            if draft is not None:
                size = draft(*img.size)
                if size is not None and img.format == "JPEG":
                    img.draft(mode, size)
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # palette transparency must go through RGBA first
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                img = img.point(lambda v: v / 256).convert("L")
            return img.convert(mode)  # RGB -> L uses ITU-R 601-2 luma; L -> RGB repeats the channel
    except DECODE_ERRORS as e:
        raise BadImageError(path, describe_decode_error(e)) from e


def load_rgb(path: str | os.PathLike, draft: Draft | None = None) -> Image.Image:
    """:func:`load_image` with 3 channels."""
    return load_image(path, 3, draft)


class ImagePath(str):
    """A file path that remembers the channel count to decode it in (the items of an ``encoded`` folder)."""

    channels: int = 3


class ImageFolder:
    """``root/<class>/**/<image>``: returns ``(PIL image in `channels`, class index)``; classes sorted by name.

    ``bad_files`` lists ``(path, reason)`` of files left out by :meth:`drop` (the pre-check).
    With ``encoded`` the items are ``(ImagePath, class index)``: the transform decodes (e.g. at a
    reduced JPEG scale, ``data/fast_crop.py``) and raises :class:`BadImageError` itself.
    """

    def __init__(self, root: str | os.PathLike, channels: int = 3, encoded: bool = False):
        self.root, self.encoded = Path(root), encoded
        self.channels = channels
        check_channels(channels)
        if not self.root.is_dir():
            raise SslabError(f"image folder {self.root} does not exist or is not a directory; give an ImageFolder "
                             "tree root/<class>/<image>, a .tar of one, or 'demo'")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise SslabError(f"{self.root} has no class sub-folders; arrange the images as root/<class>/<image>.jpg "
                             "(the ImageNet layout)")
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for dirpath, _, files in sorted(os.walk(self.root / name, followlinks=True)):
                for f in sorted(files):
                    if f.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, f), label))
        if not self.samples:
            raise SslabError(f"no images with extensions {', '.join(IMG_EXTENSIONS)} under {self.root}; "
                             "point --data at the folder that holds the class sub-folders")
        self.bad_files: list[tuple[str, str]] = []

    def drop(self, bad: list[tuple[str, str]]) -> None:
        """Leave out the files ``bad`` names (``(path, reason)`` pairs) and remember them in ``bad_files``."""
        paths = {p for p, _ in bad}
        self.samples = [s for s in self.samples if s[0] not in paths]
        self.bad_files.extend(bad)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        if self.encoded:
            item = ImagePath(path)
            item.channels = self.channels
            return item, label
        return load_image(path, self.channels), label
