"""The dataset a training run iterates: source images -> per-sample seeded transform -> batch."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .image_folder import BadImageError
from .seeding import sample_seed

log = logging.getLogger(__name__)


class SeededTransformDataset:
    """Applies ``transform`` to ``source[index]`` under the seed of ``(seed, epoch, index)``.

    Keys are ``(epoch, index)`` pairs from :class:`~sslab.data.sampler.ShardedBatchSampler`.
    Items are ``(view, label, index, skipped)``; ``view`` is whatever ``transform`` returns (a
    tensor, or a list of tensors for multi-crop). With ``skip_bad_files`` an undecodable image is
    replaced by the next decodable one and ``skipped`` counts the files passed over; otherwise the
    error (which names the file) stops the run.
    """

    def __init__(self, source, transform: Callable, seed: int, skip_bad_files: bool = False):
        self.source, self.transform, self.seed, self.skip_bad_files = source, transform, seed, skip_bad_files

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        skipped = 0
        i = index
        while True:
            try:
                img, label = self.source[i]
                with torch.random.fork_rng(devices=[]):  # the transform may decode (encoded sources): inside the try
                    # the CPU generator only: torch.manual_seed also queues lazy CUDA/XPU/MTIA seeding, ~1 ms a call
                    torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index, "augment"))
                    view = self.transform(img)
                break
            except BadImageError as e:
                if not self.skip_bad_files:
                    raise
                log.warning("skipping: %s", e)
                skipped += 1
                if skipped >= len(self.source):
                    raise RuntimeError("every image in the dataset failed to decode") from e
                i = (i + 1) % len(self.source)
        return view, label, index, skipped
