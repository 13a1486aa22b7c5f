"""Data: sources (demo, ImageFolder, tar) -> seeded per-sample transforms -> sharded batches."""

from .image_folder import BadImageError, ImageFolder, load_image, load_rgb
from .in_memory import InMemoryImages
from .pipeline import SeededTransformDataset
from .sampler import ShardedBatchSampler
from .sources import load_demo, open_images
from .transforms import mae_transform

__all__ = ["BadImageError", "ImageFolder", "InMemoryImages", "SeededTransformDataset", "ShardedBatchSampler",
           "load_demo", "load_image", "load_rgb", "mae_transform", "open_images"]
