"""Weighted k-NN classification of frozen features (DINO, Caron et al. 2021, Sec. 4.1 and official
``eval_knn.py``): cosine similarity of L2-normalised features, the k most similar training images
vote for their class with weight ``exp(sim / T)``, T = 0.07, k in {10, 20, 100, 200}.

    python -m sslab.eval.knn runs/mae_demo --data demo [--feature cls --ks 10,20,100,200]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..engine.distributed import make_accelerator
from .cli import add_common_args, source_from_args, splits_from_args, split_features
from .features import world_info
from .protocols import knn_feature
from .results import data_record, record_name, report

log = logging.getLogger("sslab")

DEFAULT_KS = (10, 20, 100, 200)


@torch.no_grad()
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                k: int, temperature: float = 0.07, num_classes: int | None = None,
                chunk: int = 1024) -> torch.Tensor:
    """Class scores (M, num_classes) of the test rows: ``sum_{j in top-k} exp(cos_j / T) * onehot(y_j)``.

    ``train_features`` (N, D), ``train_labels`` (N,), ``test_features`` (M, D); features are
    L2-normalised here. ``k`` is clamped to N.
    """
    num_classes = int(num_classes or int(train_labels.max()) + 1)
    k = min(k, train_features.shape[0])
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    labels = train_labels.to(train.device)
    out = torch.empty(test.shape[0], num_classes, device=train.device)
    for s in range(0, test.shape[0], chunk):
        sim = test[s:s + chunk] @ train.T                         # (m, N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1, largest=True, sorted=True)
        votes = torch.zeros(sim.shape[0], num_classes, dtype=sim.dtype, device=sim.device)
        votes.scatter_add_(1, labels[top_idx], (top_sim / temperature).exp())
        out[s:s + chunk] = votes
    return out


@torch.no_grad()
def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS, temperature: float = 0.07,
                 num_classes: int | None = None, device: torch.device | str = "cpu") -> dict[int, dict[str, float]]:
    """Top-1 / top-5 accuracy (%) for each k (top-5 over the first ``min(5, k)`` classes, as DINO). Under a process group each process scores a share of the
    test rows (every process must hold all the training features) and the counts are summed."""
    num_classes = int(num_classes or int(torch.cat([train_labels, test_labels]).max()) + 1)
    rank, world = world_info()
    mine = torch.arange(rank, test_features.shape[0], world)
    train_features, test_features = train_features.to(device), test_features.to(device)
    counts = torch.zeros(len(ks), 2, dtype=torch.float64)
    for i, k in enumerate(ks):
        scores = knn_predict(train_features, train_labels, test_features[mine], k, temperature, num_classes)
        order = scores.cpu().argsort(dim=1, descending=True, stable=True)
        # DINO eval_knn.py: top5 = correct.narrow(1, 0, min(5, k)); with k < 5 only k classes have votes.
        hit = order[:, : min(5, k, num_classes)] == test_labels[mine][:, None]
        counts[i, 0] = hit[:, 0].sum().item()
        counts[i, 1] = hit.any(dim=1).sum().item()
    if world > 1:
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        c = counts.to(dev)
        dist.all_reduce(c)
        counts = c.cpu()
    n = test_features.shape[0]
    return {k: {"top1": 100.0 * counts[i, 0].item() / n, "top5": 100.0 * counts[i, 1].item() / n}
            for i, k in enumerate(ks)}


def run_knn(src, train, test, feature: str | None = None, ks: tuple[int, ...] = DEFAULT_KS, temperature: float = 0.07,
            batch_size: int = 256, num_workers: int = 0, device: torch.device | str = "cpu",
            use_cache: bool = True) -> dict[str, Any]:
    """k-NN of an :class:`~sslab.eval.cli.EncoderSource` on :class:`~sslab.eval.cli.LabelledData` splits;
    returns the result dict (headline ``top1`` at k=20, or the largest k below 20 if 20 is not asked for).
    ``feature`` defaults to DINO's k-NN feature, the class token (:func:`sslab.eval.protocols.knn_feature`)."""
    feature = feature or knn_feature(src.encoder)
    t0 = time.perf_counter()
    (ftr, ytr, itr), (fte, yte, ite) = split_features(src, train, test, feature, batch_size, num_workers, device,
                                                      use_cache)
    t_feat = time.perf_counter() - t0
    acc = knn_accuracy(ftr, ytr, fte, yte, ks, temperature, device=device)
    head = 20 if 20 in ks else max((k for k in ks if k <= 20), default=ks[0])
    return {"evaluator": "knn", "top1": acc[head]["top1"], "top5": acc[head]["top5"], "k": head,
            "by_k": {str(k): v for k, v in acc.items()}, "feature": feature, "temperature": temperature,
            "checkpoint": str(src.path), "checkpoint_fingerprint": src.fingerprint, "data": data_record(train, test),
            "train_size": len(train.indices), "test_size": len(test.indices), "feature_dim": int(ftr.shape[1]),
            "feature_cache_hit": itr["cache_hit"] and ite["cache_hit"], "feature_seconds": t_feat,
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m sslab.eval.knn CHECKPOINT --data DATA [...]``: k-NN accuracy, JSON in the run folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m sslab.eval.knn", description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--ks", default="10,20,100,200", help="comma-separated k values")
    ap.add_argument("--temperature", type=float, default=0.07)
    args = ap.parse_args(argv)
    ks = tuple(int(k) for k in args.ks.split(","))
    if min(ks) < 1:
        ap.error(f"--ks must be positive integers, got {args.ks}")
    acc = make_accelerator("no")
    src = source_from_args(args)
    args.feature = args.feature or knn_feature(src.encoder)
    train, test = splits_from_args(args, src)
    result = run_knn(src, train, test, args.feature, ks, args.temperature, args.batch_size, args.num_workers,
                     acc.device, not args.no_cache)
    result["world_size"] = acc.num_processes
    if acc.is_main_process:
        name = args.name or record_name("knn", args.feature, train, test, None,
                                        {"ks": ks, "T": args.temperature, "seed": args.seed})
        report(name, result, src.config, src.run_dir, args.output_dir, args.wandb_mode,
               tables={"by_k": [{"k": int(k), **v} for k, v in result["by_k"].items()]})
        print(f"k-NN ({args.feature}): " + ", ".join(f"k={k} top1 {v['top1']:.2f}" for k, v in result["by_k"].items()),
              file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
