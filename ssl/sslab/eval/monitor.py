"""Online k-NN during pretraining: every ``monitor_every_epochs`` epochs the current encoder is scored
with 20-NN (DINO's weighted vote, :mod:`sslab.eval.knn`) on a small labelled split, and the accuracy is
logged as ``monitor/knn_top1`` next to the loss, a curve over training.

The labelled split is ``monitor_train_size`` training and ``monitor_test_size`` held-out images of
``monitor_data`` (default: the training data), its ``train`` and ``test`` (else ``val``) folders (a
tree without them is refused before training starts, never scored on its root), or of the folders
``monitor_train_data`` / ``monitor_test_data`` used whole (the evaluators' ``--train-data`` /
``--test-data``), class-balanced, eval-transformed once and kept in memory. The encoder is a copy rebuilt from the
live model through :func:`sslab.encoders.encoder_state_dict` (so it is the same encoder a checkpoint
would give: MAE's, DINO's teacher, ...), which leaves the training model, its mode and the training
random streams untouched. Only the main process evaluates; the others go on to the checkpoint barrier.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import torch
from torch import nn

from ..data.sources import HELD_OUT_SPLIT, WHOLE, locate_split
from ..errors import SslabError
from ..encoders import build_encoder, encoder_state_dict
from .features import encode, open_split_tensors
from .knn import knn_accuracy
from .preprocess import eval_image_transform

log = logging.getLogger("sslab")


def check_monitor_config(cfg) -> None:
    """Raise if the monitor settings cannot work (before training starts), including a data layout
    without the ``train`` and held-out splits."""
    if cfg.monitor_every_epochs < 0:
        raise SslabError(f"monitor_every_epochs must be >= 0 (0: off), got {cfg.monitor_every_epochs}")
    if cfg.monitor_every_epochs and min(cfg.monitor_train_size, cfg.monitor_test_size) < 1:
        raise SslabError(f"monitor_train_size/monitor_test_size must be >= 1, got "
                         f"{cfg.monitor_train_size}/{cfg.monitor_test_size}")
    if cfg.monitor_every_epochs:
        (tr_spec, tr_split), (te_spec, te_split) = monitor_splits(cfg)
        try:
            tr_folder = locate_split(tr_spec, tr_split, flat_ok=False)[1]
            te_folder = locate_split(te_spec, te_split, flat_ok=False)[1]
        except SslabError as e:
            raise SslabError(f"monitor: {e} (or set --monitor-data to a labelled tree, or --monitor-train-data "
                             "and --monitor-test-data to folders of class folders)") from None
        if tr_folder is not None and tr_folder == te_folder:
            raise SslabError(f"monitor: the training and held-out splits are the same folder {tr_folder}; give "
                             "disjoint --monitor-train-data and --monitor-test-data")


def monitor_splits(cfg) -> tuple[tuple[str, str], tuple[str, str]]:
    """``((train spec, split), (test spec, split))`` the monitor reads: an explicit folder whole, else
    ``monitor_data``'s (default: ``data``'s) ``train`` and held-out splits."""
    base = cfg.monitor_data or cfg.data
    return ((cfg.monitor_train_data, WHOLE) if cfg.monitor_train_data else (base, "train"),
            (cfg.monitor_test_data, WHOLE) if cfg.monitor_test_data else (base, HELD_OUT_SPLIT))


@functools.lru_cache(maxsize=2)
def _labelled_split(train: tuple[str, str], test: tuple[str, str], in_chans: int, img_size: int, mean: tuple,
                    std: tuple, train_size: int, test_size: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels) of (spec, split) pairs, eval-transformed,
    cached per process."""
    tf = eval_image_transform(img_size, mean, std, in_chans)
    xtr, ytr = open_split_tensors(*train, in_chans, tf, train_size, seed)
    xte, yte = open_split_tensors(*test, in_chans, tf, test_size, seed)
    return xtr, ytr, xte, yte


@torch.no_grad()
def _features(encoder: nn.Module, x: torch.Tensor, feature: str, device, batch: int = 256) -> torch.Tensor:
    return torch.cat([encode(encoder, x[s:s + batch].to(device), feature).cpu() for s in range(0, x.shape[0], batch)])


def monitor_knn(cfg, model: nn.Module, branch, is_main: bool, k: int = 20, feature: str = "cls") -> dict[str, Any]:
    """20-NN top-1 of the live run's encoder on the monitor split; ``{}`` on non-main processes.

    ``model`` is the unwrapped training model, ``branch`` the run's branch (DINO keeps the teacher there).
    Runs under ``torch.random.fork_rng`` so the training random streams are not advanced.
    """
    check_monitor_config(cfg)
    if not is_main:
        return {}
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        xtr, ytr, xte, yte = _labelled_split(*monitor_splits(cfg), cfg.in_chans, cfg.img_size,
                                             tuple(cfg.mean), tuple(cfg.std), cfg.monitor_train_size,
                                             cfg.monitor_test_size, cfg.seed)
        config = cfg.to_dict()
        encoder = build_encoder(config)
        encoder.load_state_dict(encoder_state_dict({"config": config, "model": model.state_dict(),
                                                    "branch": branch.state_dict()}), strict=True)
        encoder.to(device).eval()
        if feature == "cls" and getattr(encoder, "cls_token", None) is None:
            feature = "avg"  # Swin / pooled ViTs have no class token
        ftr, fte = _features(encoder, xtr, feature, device), _features(encoder, xte, feature, device)
        top1 = knn_accuracy(ftr, ytr, fte, yte, (k,))[k]["top1"]
    del encoder
    return {f"monitor/knn{k}_top1": top1, "monitor/seconds": time.perf_counter() - t0}
