"""Frozen-encoder features, computed once and cached on disk.

Feature choices (``feature`` strings; parts joined with ``+`` are concatenated):

- ``cls``: the class token after the final norm (MAE linear probe, ``main_linprobe.py``; ViT only).
- ``avg``: the average of the patch tokens after the final norm (ViT), or of the last stage's
  feature map (Swin, timm's ``global_pool='avg'``).
- ``lastK``: the class tokens of the last K blocks, each through the final norm, concatenated
  (DINO ``eval_linear.py``: ``n_last_blocks=4`` for ViT-S; ``last1+avg`` is its ViT-B
  ``avgpool_patchtokens`` recipe). For Swin: the average-pooled maps of the last K stages.

A cache entry is keyed by the encoder's weights (a fingerprint of the checkpoint file), the data
(spec, split, the chosen indices and a fingerprint of the files), the transform and the feature
choice, so probing the same encoder again costs nothing and a changed checkpoint is recomputed.
Entries are ``$SSLAB_CACHE/features/<key>.pt`` (weights-only torch files), written atomically.

Under ``torchrun`` every process encodes its share of the images and the features are gathered,
so every process ends with all of them; in one process it is a plain loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import DataLoader

from ..data.sources import cache_dir
from ..serialization import safe_load

log = logging.getLogger("sslab")

CACHE_VERSION = 1  # bump when the meaning of a cached feature changes
_PART_RE = re.compile(r"^(cls|avg|last(\d+))$")


def parse_feature(feature: str) -> list[str]:
    """``"last4+avg"`` -> ``["last4", "avg"]``; raises on anything else."""
    parts = feature.split("+")
    for p in parts:
        m = _PART_RE.match(p)
        if not m or (m.group(2) is not None and int(m.group(2)) < 1):
            raise ValueError(f"feature {feature!r}: each '+'-joined part must be 'cls', 'avg' or 'lastK' (K >= 1), "
                             f"e.g. 'cls', 'avg', 'last4', 'last1+avg'; got {p!r}")
    return parts


def check_feature(encoder: nn.Module, feature: str) -> None:
    """Raise if ``encoder`` cannot give ``feature`` (e.g. ``cls`` of a Swin), before any compute."""
    parts = parse_feature(feature)
    if isinstance(encoder, SwinTransformer):
        if "cls" in parts:
            raise ValueError("a Swin encoder has no class token; use feature 'avg' or 'lastK' (stage averages)")
        depth = len(encoder.layers)
    elif isinstance(encoder, VisionTransformer):
        if any(p.startswith(("cls", "last")) for p in parts) and encoder.cls_token is None:
            raise ValueError(f"this ViT has no class token; use feature 'avg', not {feature!r}")
        depth = len(encoder.blocks)
    else:
        raise TypeError(f"features are defined for timm VisionTransformer and SwinTransformer encoders, "
                        f"not {type(encoder).__name__}")
    for p in parts:
        if p.startswith("last") and int(p[4:]) > depth:
            raise ValueError(f"feature {p!r} asks for more blocks/stages than the encoder has ({depth})")


def encode(encoder: nn.Module, x: torch.Tensor, feature: str) -> torch.Tensor:
    """Images (N, C, H, W) -> features (N, D) of the frozen ``encoder`` (see the module docstring)."""
    outs = []
    tokens = None
    for part in parse_feature(feature):
        if isinstance(encoder, SwinTransformer):
            if part.startswith("last"):
                maps = encoder.forward_intermediates(x, indices=int(part[4:]), norm=True, intermediates_only=True)
                outs += [m.mean(dim=(2, 3)) for m in maps]  # NCHW stage maps -> (N, C_stage)
            else:  # avg
                outs.append(encoder.forward_features(x).mean(dim=(1, 2)))  # (N, H, W, C), normed
            continue
        if part.startswith("last"):
            inter = encoder.forward_intermediates(x, indices=int(part[4:]), return_prefix_tokens=True, norm=True,
                                                  intermediates_only=True)
            outs += [prefix[:, 0] for _, prefix in inter]  # DINO: torch.cat([x[:, 0] for x in intermediate])
            continue
        if tokens is None:
            tokens = encoder.forward_features(x)  # (N, prefix + L, D), after the final norm
        outs.append(tokens[:, 0] if part == "cls" else tokens[:, encoder.num_prefix_tokens:].mean(dim=1))
    return torch.cat(outs, dim=-1).float()


class _Indexed(torch.utils.data.Dataset):
    """``dataset[indices[i]]`` through ``transform``: items ``(image, label, i)``."""

    def __init__(self, dataset, indices: list[int], transform: Callable):
        self.dataset, self.indices, self.transform = dataset, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img, label = self.dataset[self.indices[i]]
        return self.transform(img), int(label), i


def world_info() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_rows(local: torch.Tensor, pos: torch.Tensor, n: int) -> torch.Tensor:
    """Assemble the (n, ...) tensor whose rows ``pos`` each process holds in ``local``."""
    rank, world = world_info()
    if world == 1:
        out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
        out[pos] = local.cpu()
        return out
    width = -(-n // world)  # every process pads its share to the same length for all_gather
    pad = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=local.device)
    pad[: local.shape[0]] = local
    ppos = torch.full((width,), -1, dtype=torch.long, device=local.device)
    ppos[: pos.shape[0]] = pos.to(local.device)
    rows = [torch.empty_like(pad) for _ in range(world)]
    poss = [torch.empty_like(ppos) for _ in range(world)]
    dist.all_gather(rows, pad)
    dist.all_gather(poss, ppos)
    rows_t, poss_t = torch.cat(rows).cpu(), torch.cat(poss).cpu()
    keep = poss_t >= 0
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
    out[poss_t[keep]] = rows_t[keep]
    return out


@torch.no_grad()
def extract_features(encoder: nn.Module, dataset, transform: Callable, feature: str,
                     indices: list[int] | None = None, batch_size: int = 256, num_workers: int = 0,
                     device: torch.device | str = "cpu", progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``dataset[indices]`` (all if None) with the frozen ``encoder``: ``(features (N, D) float32,
    labels (N,) int64)`` in the order of ``indices``. Shards over processes when a process group exists."""
    check_feature(encoder, feature)
    indices = list(range(len(dataset))) if indices is None else list(indices)
    n = len(indices)
    rank, world = world_info()
    mine = list(range(rank, n, world))
    view = torch.utils.data.Subset(_Indexed(dataset, indices, transform), mine)
    loader = DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda")
    was_training = encoder.training
    encoder.eval()
    feats, labels, pos = [], [], []
    t0 = time.perf_counter()
    try:
        for b, (x, y, i) in enumerate(loader):
            feats.append(encode(encoder, x.to(device, non_blocking=True), feature).cpu())
            labels.append(y)
            pos.append(i)
            if progress and rank == 0 and (b + 1) % 20 == 0:
                done = min((b + 1) * batch_size * world, n)
                log.info("features: %d / %d images (%.0f img/s)", done, n, done / (time.perf_counter() - t0))
    finally:
        encoder.train(was_training)
    if not feats:  # more processes than images: this one only learns the feature width
        x = transform(dataset[indices[0]][0])[None].to(device)
        feats = [encode(encoder.eval(), x, feature).cpu()[:0]]
        encoder.train(was_training)
        labels, pos = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    f, y, p = torch.cat(feats), torch.cat(labels).long(), torch.cat(pos).long()
    if world > 1:
        device_ = torch.device(device)
        f, y, p = f.to(device_), y.to(device_), p.to(device_)
    return _gather_rows(f, p, n), _gather_rows(y, p, n)


# --- fingerprints and the cache ------------------------------------------------------------------

def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Identity of a weight file (or an exported folder's weight + config files) without reading it all:
    size, mtime and sha256 of the first and last MiB. Any rewrite of the file changes it."""
    p = Path(path)
    files = sorted(q for q in p.iterdir() if q.is_file() and q.name in ("model.safetensors", "config.json",
                                                                          "pytorch_model.bin")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"{p}: no weight files to fingerprint")
    h = hashlib.sha256()
    for q in files:
        st = q.stat()
        h.update(f"{q.name}|{st.st_size}|{st.st_mtime_ns}|".encode())
        with open(q, "rb") as f:
            h.update(f.read(chunk))
            if st.st_size > chunk:
                f.seek(max(chunk, st.st_size - chunk))
                h.update(f.read(chunk))
    return h.hexdigest()[:24]


def dataset_fingerprint(dataset) -> str:
    """Identity of a dataset's content: the file list (ImageFolder) or the pixel bytes (in memory)."""
    h = hashlib.sha256()
    if hasattr(dataset, "samples"):
        for path, label in dataset.samples:
            h.update(f"{path}|{label}\n".encode())
        for path, _ in (dataset.samples[0], dataset.samples[-1]):
            h.update(str(os.stat(path).st_mtime_ns).encode())
    elif hasattr(dataset, "images") and hasattr(dataset, "labels"):
        h.update(dataset.images.contiguous().numpy().tobytes())
        h.update(torch.as_tensor(dataset.labels).numpy().tobytes())
    else:
        raise TypeError(f"cannot fingerprint a {type(dataset).__name__}; expected sslab ImageFolder or InMemoryImages")
    return h.hexdigest()[:24]


def dataset_labels(dataset) -> torch.Tensor:
    """All labels (N,) without decoding any image."""
    if hasattr(dataset, "samples"):
        return torch.tensor([label for _, label in dataset.samples], dtype=torch.long)
    if hasattr(dataset, "labels"):
        return torch.as_tensor(dataset.labels).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def subset_indices(labels: torch.Tensor, size: int | None, seed: int = 0) -> list[int]:
    """A class-balanced random subset of ``size`` indices (all, in order, if None or >= N).

    Seeded and nested: the subset of size n is a prefix-per-class of the subset of any larger size.
    """
    n = labels.numel()
    if size is None or size >= n:
        return list(range(n))
    if size < 1:
        raise ValueError(f"subset size must be >= 1, got {size}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    # Rank every image within its class in the permuted order, then take images round-robin over classes.
    lab = labels[perm]
    rank_in_class = torch.zeros(n, dtype=torch.long)
    counts: dict[int, int] = {}
    for j, c in enumerate(lab.tolist()):
        rank_in_class[j] = counts.get(c, 0)
        counts[c] = counts.get(c, 0) + 1
    order = torch.argsort(rank_in_class * n + torch.arange(n), stable=True)
    return sorted(perm[order[:size]].tolist())


def split_indices(labels: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (fit, held-out) with about ``fraction`` of each class held out (at least one per class
    that has two or more items)."""
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(round(fraction * idx.numel()))
        k = min(max(k, 1 if idx.numel() > 1 else 0), idx.numel() - 1) if fraction > 0 else 0
        held.append(idx[:k])
        fit.append(idx[k:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


def _everyone(flag: bool, device: torch.device | str) -> bool:
    """True when ``flag`` holds on every process (e.g. each one's node sees the cache file)."""
    if world_info()[1] == 1:
        return flag
    t = torch.tensor([int(flag)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def cache_path(key: dict[str, Any]) -> Path:
    """The cache file of a key dict (a sha256 of its JSON)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return cache_dir() / "features" / f"{digest}.pt"


def cached_features(encoder: nn.Module, encoder_fingerprint: str | None, dataset, data_spec: str, split: str,
                    transform: Callable, feature: str, indices: list[int] | None = None,
                    batch_size: int = 256, num_workers: int = 0, device: torch.device | str = "cpu",
                    use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """:func:`extract_features` through the on-disk cache. Returns ``(features, labels, info)`` where
    ``info`` has ``cache_file``, ``cache_hit`` and ``seconds``. ``encoder_fingerprint`` None (a live
    model) or ``use_cache`` False skips the cache."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    key = {"version": CACHE_VERSION, "encoder": encoder_fingerprint, "data": data_spec, "split": split,
           "data_fingerprint": dataset_fingerprint(dataset),
           "indices": hashlib.sha256(torch.tensor(indices, dtype=torch.long).numpy().tobytes()).hexdigest()[:24],
           "n": len(indices), "transform": repr(transform), "feature": feature}
    path = cache_path(key)
    t0 = time.perf_counter()
    blob = None
    if use_cache and encoder_fingerprint is not None and path.is_file():
        blob = safe_load(path)
        if blob.get("key") != json.dumps(key, sort_keys=True, default=str):
            blob = None
    if _everyone(blob is not None, device):  # all processes read the cache, or all take part in the extraction
        return blob["features"], blob["labels"], {"cache_file": str(path), "cache_hit": True,
                                                  "seconds": time.perf_counter() - t0}
    feats, labels = extract_features(encoder, dataset, transform, feature, indices, batch_size, num_workers,
                                     device, progress=True)
    rank, _ = world_info()
    if use_cache and encoder_fingerprint is not None and rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"features": feats, "labels": labels, "key": json.dumps(key, sort_keys=True, default=str)}, tmp)
        os.replace(tmp, path)  # readers see the old entry or the whole new one, never a partial file
    return feats, labels, {"cache_file": str(path), "cache_hit": False, "seconds": time.perf_counter() - t0}


def open_split_tensors(spec: str, split: str, channels: int, transform: Callable, size: int | None = None,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced subset of ``size`` images of a split (``train``, ``held_out``, ...; a tree without
    it is refused, :func:`sslab.data.sources.resolve_split`), transformed and stacked:
    ``(images (N, C, H, W), labels (N,))``; for small labelled splits held in memory (the monitor)."""
    from ..data.sources import open_images

    ds = open_images(spec, split, False, channels, flat_ok=False)
    idx = subset_indices(dataset_labels(ds), size, seed)
    items = [ds[i] for i in idx]
    return torch.stack([transform(img) for img, _ in items]), torch.tensor([int(y) for _, y in items])
