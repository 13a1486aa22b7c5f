"""ImageFolder trees (ImageNet layout: ``root/<class>/<image>``) decoded to RGB with PIL."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class BadImageError(RuntimeError):
    """An image file that could not be decoded; the message names the file."""


def load_rgb(path: str | os.PathLike, draft: Callable[[int, int], tuple[int, int] | None] | None = None) -> Image.Image:
    """Decode any PIL-readable image (grayscale, palette, RGBA, CMYK, 16-bit...) to 8-bit RGB.

    ``draft`` is called with the full (width, height) before decoding; if it returns a size, a JPEG
    is decoded at the smallest 1/2, 1/4 or 1/8 scale still at least that size (other formats in full).
    """
    try:
        with Image.open(path) as img:
            if draft is not None:
                size = draft(*img.size)
                if size is not None and img.format == "JPEG":
                    img.draft("RGB", size)
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # palette transparency must go through RGBA first
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                img = img.point(lambda v: v / 256).convert("L")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImageError(
            f"cannot decode image {path}: {e}. Remove or fix the file, or pass --skip-bad-files true "
            "to skip undecodable files (they are counted in the log)"
        ) from e


class ImageFolder:
    """``root/<class>/**/<image>``: returns ``(PIL RGB image, class index)``; classes sorted by name.

    With ``encoded`` the items are ``(file path, class index)``: the transform decodes (e.g. at a
    reduced JPEG scale, ``data/fast_crop.py``) and raises :class:`BadImageError` itself.
    """

    def __init__(self, root: str | os.PathLike, encoded: bool = False):
        self.root, self.encoded = Path(root), encoded
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a directory")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise ValueError(
                f"{self.root} has no class sub-folders; expected the ImageNet layout root/<class>/<image>.jpg"
            )
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for dirpath, _, files in sorted(os.walk(self.root / name, followlinks=True)):
                for f in sorted(files):
                    if f.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, f), label))
        if not self.samples:
            raise ValueError(f"no images with extensions {IMG_EXTENSIONS} under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return (path if self.encoded else load_rgb(path)), label
