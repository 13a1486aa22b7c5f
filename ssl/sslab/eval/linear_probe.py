"""Linear probing of a frozen encoder, two ways.

**Cached (default, fast).** The encoder's features of the (un-augmented, eval-transformed) images
are computed once and cached (:mod:`sslab.eval.features`); then a whole grid of linear classifiers,
one per (learning rate, weight decay), is trained at once on them: one ``(H, D, C)`` weight tensor,
one matmul per batch for all H heads, each head its own SGD-with-momentum update and cosine
schedule. Every head sits on the same ``BatchNorm1d(affine=False)`` of the features, as in the MAE
probe (He et al. 2021, Sec. A.2: BN without affine before the linear head). The grid's heads are
fitted on the training split minus a held-out part; the head best on the held-out part is reported
on the test split. Training many heads together follows DINOv2's ``eval/linear.py``.

**Augmented (the papers' protocol; for fidelity checks).** Randomly cropped and flipped images go
through the frozen encoder every epoch, one head: MAE (``main_linprobe.py``: BN(affine=False) +
linear, LARS, base lr 0.1 x batch/256, wd 0, warmup then cosine per iteration) or DINO
(``eval_linear.py``: linear, SGD momentum 0.9, lr 0.001 x batch/256, wd 0, cosine per epoch).

    python -m sslab.eval.linear_probe runs/mae_demo --data demo [--feature cls]
    python -m sslab.eval.linear_probe runs/mae_demo --data demo --mode augmented --recipe mae --epochs 90
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config_cli import converter
from ..errors import SslabError
from ..data.pipeline import SeededTransformDataset
from ..data.sampler import ShardedBatchSampler
from ..engine.distributed import make_accelerator
from ..schedules import warmup_cosine
from .cli import add_common_args, eval_preprocess, source_from_args, splits_from_args, split_features
from .features import cached_features, check_feature, dataset_labels, encode, split_indices
from .lars import LARS
from .protocols import probe_batch_norm, probe_feature, probe_recipe
from .preprocess import probe_train_transform
from .results import best_over_epochs, data_record, record_name, report

log = logging.getLogger("sslab")

DEFAULT_LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)       # base lr at batch 256 (lr = base * batch / 256)
DEFAULT_WDS = (0.0, 1e-4, 1e-3)


class LinearHeads(nn.Module):
    """H linear classifiers on shared ``BatchNorm1d(affine=False)`` features.

    ``forward(x (N, D)) -> logits (H, N, C)``. Every head starts from the same N(0, 0.01^2) weights
    (MAE/DINO initialise their heads this way) and zero bias, so heads differ only by their
    hyperparameters, and a head of a grid is the head trained alone with its (lr, wd).
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int, batch_norm: bool = True, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if batch_norm else nn.Identity()
        w0 = torch.randn(dim, num_classes, generator=g) * 0.01
        self.weight = nn.Parameter(w0.expand(num_heads, dim, num_classes).clone())
        self.bias = nn.Parameter(torch.zeros(num_heads, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, d, c = self.weight.shape
        z = self.bn(x)
        # All heads in one matmul: (N, D) @ (D, H*C) -> (N, H, C) -> (H, N, C).
        logits = (z @ self.weight.permute(1, 0, 2).reshape(d, h * c)).view(-1, h, c).transpose(0, 1)
        return logits + self.bias[:, None, :]


@torch.no_grad()
def _sgd_step(heads: LinearHeads, lr: torch.Tensor, wd: torch.Tensor, bufs: list[torch.Tensor],
              momentum: float) -> None:
    """``torch.optim.SGD`` (momentum, no dampening) with a learning rate and weight decay per head;
    the bias is not decayed."""
    for p, buf, decay in ((heads.weight, bufs[0], True), (heads.bias, bufs[1], False)):
        shape = (-1,) + (1,) * (p.ndim - 1)
        g = p.grad + wd.view(shape) * p if decay else p.grad
        buf.mul_(momentum).add_(g)
        p.sub_(lr.view(shape) * buf)


@torch.no_grad()
def _scores(heads: LinearHeads, x: torch.Tensor, y: torch.Tensor,
            chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head accuracy (%) and mean cross-entropy on (x, y), BN in eval mode."""
    heads.eval()
    correct = torch.zeros(heads.weight.shape[0], dtype=torch.float64)
    loss = torch.zeros(heads.weight.shape[0], dtype=torch.float64)
    for s in range(0, x.shape[0], chunk):
        logits = heads(x[s:s + chunk])                                            # (H, n, C)
        yy = y[s:s + chunk]
        correct += (logits.argmax(-1) == yy).sum(1).double().cpu()
        ce = F.cross_entropy(logits.transpose(1, 2), yy.expand(logits.shape[0], -1), reduction="none")  # (H, n)
        loss += ce.sum(1).double().cpu()
    n = max(x.shape[0], 1)
    return 100.0 * correct / n, loss / n


def train_heads(x: torch.Tensor, y: torch.Tensor, num_classes: int, lrs=DEFAULT_LRS, wds=DEFAULT_WDS,
                epochs: int = 100, batch_size: int = 256, momentum: float = 0.9, batch_norm: bool = True,
                seed: int = 0, device: torch.device | str = "cpu",
                watch: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[LinearHeads, list[dict[str, float]], torch.Tensor | None]:
    """Train one head per (lr, wd) of the grid on features ``x`` (N, D), labels ``y`` (N,).

    Learning rates are base values at batch 256 (lr = base * batch_size / 256), annealed per step
    with a half cosine to 0 (DINO). Returns the heads, the grid (one dict per head, same order) and,
    with ``watch`` = (test features, labels), every head's test accuracy after each epoch (epochs, H).
    """
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        # Each step is a few tiny matmuls: OpenMP threads only add synchronisation (10x slower on a busy 2-core box).
        torch.set_num_threads(1)
    try:
        return _train_heads(x, y, num_classes, lrs, wds, epochs, batch_size, momentum, batch_norm, seed, device,
                            watch)
    finally:
        torch.set_num_threads(threads)


def _train_heads(x, y, num_classes, lrs, wds, epochs, batch_size, momentum, batch_norm, seed, device, watch):
    grid = [{"lr": float(lr), "wd": float(wd)} for lr, wd in itertools.product(lrs, wds)]
    x, y = x.to(device).float(), y.to(device).long()
    n, d = x.shape
    batch_size = min(batch_size, n)
    heads = LinearHeads(d, num_classes, len(grid), batch_norm, seed).to(device)
    lr0 = torch.tensor([g["lr"] * batch_size / 256 for g in grid], device=device)
    wd = torch.tensor([g["wd"] for g in grid], device=device)
    bufs = [torch.zeros_like(heads.weight), torch.zeros_like(heads.bias)]
    steps_per_epoch = n // batch_size  # drop the ragged last batch: BN statistics want full batches
    total = epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(seed)
    step = 0
    per_epoch = []
    if watch is not None:
        watch = (watch[0].to(device).float(), watch[1].to(device).long())
    heads.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            logits = heads(x[idx])                                                  # (H, B, C)
            # Sum over heads of each head's mean loss: the heads' gradients stay independent.
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y[idx].repeat(len(grid)), reduction="sum")
            heads.weight.grad = heads.bias.grad = None
            (loss / idx.shape[0]).backward()
            _sgd_step(heads, lr0 * 0.5 * (1 + math.cos(math.pi * step / total)), wd, bufs, momentum)
            step += 1
        if watch is not None:  # the official scripts' per-epoch test evaluation (their "max accuracy")
            per_epoch.append(_scores(heads, *watch)[0])
            heads.train()
    heads.eval()
    return heads, grid, (torch.stack(per_epoch) if per_epoch else None)


def probe_cached_features(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          lrs=DEFAULT_LRS, wds=DEFAULT_WDS, epochs: int = 100, batch_size: int = 256,
                          val_fraction: float = 0.1, batch_norm: bool = True, seed: int = 0,
                          device: torch.device | str = "cpu") -> dict[str, Any]:
    """Fit the grid on the training features minus ``val_fraction`` (class-stratified), pick the head with
    the best held-out accuracy (ties: lower held-out loss), and report it on the test features."""
    num_classes = int(torch.cat([train_y, test_y]).max()) + 1
    fit, held = split_indices(train_y, val_fraction, seed)
    if held.numel() == 0:
        raise SslabError(f"val_fraction {val_fraction} holds out no training images; use a value in (0, 1)")
    t0 = time.perf_counter()
    heads, grid, per_epoch = train_heads(train_x[fit], train_y[fit], num_classes, lrs, wds, epochs, batch_size,
                                         batch_norm=batch_norm, seed=seed, device=device, watch=(test_x, test_y))
    val_acc, val_loss = _scores(heads, train_x[held].to(device).float(), train_y[held].to(device))
    test_acc, _ = _scores(heads, test_x.to(device).float(), test_y.to(device))
    best = min(range(len(grid)), key=lambda h: (-val_acc[h].item(), val_loss[h].item()))
    for h, g in enumerate(grid):
        g.update(val_top1=val_acc[h].item(), val_loss=val_loss[h].item(), test_top1=test_acc[h].item())
    evals = [{"epoch": e + 1, "top1": per_epoch[e, best].item()} for e in range(per_epoch.shape[0])]
    return {"top1": test_acc[best].item(), **best_over_epochs(evals), "val_top1": val_acc[best].item(),
            "best": dict(grid[best]), "grid": grid, "batch_norm": batch_norm, "epochs": epochs, "batch_size": batch_size, "val_fraction": val_fraction,
            "fit_size": int(fit.numel()), "held_out_size": int(held.numel()), "num_classes": num_classes,
            "head_seconds": time.perf_counter() - t0}


def run_linear_probe(src, train, test, feature: str | None = None, lrs=DEFAULT_LRS, wds=DEFAULT_WDS,
                     epochs: int = 100, head_batch_size: int = 256, val_fraction: float = 0.1, batch_size: int = 256,
                     num_workers: int = 0, device: torch.device | str = "cpu", use_cache: bool = True,
                     seed: int = 0, batch_norm: bool | None = None) -> dict[str, Any]:
    """The cached-feature probe of an :class:`~sslab.eval.cli.EncoderSource` on labelled splits; ``feature``
    and ``batch_norm`` default to the method's protocol (:mod:`sslab.eval.protocols`)."""
    feature = feature or probe_feature(src.method, src.encoder)
    batch_norm = probe_batch_norm(src.method) if batch_norm is None else batch_norm
    t0 = time.perf_counter()
    (ftr, ytr, itr), (fte, yte, ite) = split_features(src, train, test, feature, batch_size, num_workers, device,
                                                      use_cache)
    t_feat = time.perf_counter() - t0
    out = probe_cached_features(ftr, ytr, fte, yte, lrs, wds, epochs, head_batch_size, val_fraction, batch_norm,
                                seed=seed, device=device)
    return {"evaluator": "linear_probe", "mode": "cached", **out, "feature": feature, "method": src.method,
            "checkpoint": str(src.path), "checkpoint_fingerprint": src.fingerprint,
            "data": data_record(train, test), "train_size": len(train.indices),
            "test_size": len(test.indices), "feature_dim": int(ftr.shape[1]),
            "feature_cache_hit": itr["cache_hit"] and ite["cache_hit"], "feature_seconds": t_feat,
            "seconds": time.perf_counter() - t0}


# --- the papers' augmented probe ------------------------------------------------------------------

RECIPES = {
    # MAE main_linprobe.py: 90 epochs, 10 warmup, blr 0.1, LARS, wd 0, BN(affine=False) + linear.
    "mae": {"epochs": 90, "warmup_epochs": 10, "blr": 0.1, "batch_norm": True},
    # DINO eval_linear.py: 100 epochs, lr 0.001 * batch / 256, SGD momentum 0.9, wd 0, cosine per epoch.
    "dino": {"epochs": 100, "warmup_epochs": 0, "blr": 0.001, "batch_norm": False},
}


def run_augmented_probe(src, train, test, feature: str | None = None, recipe: str | None = None,
                        epochs: int | None = None,
                        blr: float | None = None, warmup_epochs: float | None = None, batch_size: int = 256,
                        num_workers: int = 0, accelerator=None, seed: int = 0,
                        use_cache: bool = True) -> dict[str, Any]:
    """Train one head on augmented images through the frozen encoder every epoch (MAE or DINO recipe);
    test on the eval-transformed test split. ``batch_size`` is per process.

    The published base lrs suit the papers' budgets (MAE: batch 16384, ~7000 steps). With small
    batches and few steps LARS at ``blr`` 0.1 hardly moves the head (lr x trust coefficient 0.001 is
    its relative step), so small-scale fidelity checks need a larger ``blr`` (benchmarks/probe_speed.py).
    ``feature`` and ``recipe`` default to the method's (:mod:`sslab.eval.protocols`); the training crop is
    the recipe's (:func:`sslab.eval.preprocess.probe_train_transform`). The test split is scored after
    every epoch on cached eval features: ``top1`` is the last epoch's, ``top1_best_over_epochs`` the papers'.
    """
    feature = feature or probe_feature(src.method, src.encoder)
    recipe = recipe or probe_recipe(src.method)
    if recipe not in RECIPES:
        raise SslabError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    r = RECIPES[recipe]
    epochs = int(epochs or r["epochs"])
    # Default warmup: the recipe's share of its schedule (MAE: 10 of 90 epochs).
    warmup = float(warmup_epochs) if warmup_epochs is not None else epochs * r["warmup_epochs"] / r["epochs"]
    blr = float(blr if blr is not None else r["blr"])
    if accelerator is None:
        accelerator = make_accelerator("no")
    acc = accelerator
    device, world, rank = acc.device, acc.num_processes, acc.process_index
    encoder = src.encoder.to(device).eval()
    check_feature(encoder, feature)
    for p in encoder.parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    num_classes = int(max(dataset_labels(train.dataset).max(), dataset_labels(test.dataset).max())) + 1
    with torch.no_grad():
        probe = eval_preprocess(src)(train.dataset[train.indices[0]][0])[None].to(device)
        dim = encode(encoder, probe, feature).shape[1]
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(dim, num_classes)
    with torch.no_grad():
        if recipe == "mae":  # trunc_normal_(std=0.01)
            linear.weight.copy_(torch.nn.init.trunc_normal_(torch.empty_like(linear.weight), std=0.01, generator=g))
        else:
            linear.weight.normal_(0.0, 0.01, generator=g)
        linear.bias.zero_()
    bn = [nn.BatchNorm1d(dim, affine=False, eps=1e-6)] if r["batch_norm"] else []
    head = nn.Sequential(*bn, linear)
    eff_batch = batch_size * world
    lr = blr * eff_batch / 256
    opt = (LARS(head.parameters(), lr=lr, weight_decay=0.0) if recipe == "mae"
           else torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0))
    head, opt = acc.prepare(head, opt)

    # Test features once (eval transform, frozen encoder): each epoch's score is then one matmul.
    fte, yte, _ = cached_features(encoder, src.fingerprint, test.dataset, test.spec, test.split, eval_preprocess(src),
                                  feature, test.indices, batch_size, num_workers, device, use_cache)
    source = torch.utils.data.Subset(train.dataset, train.indices)
    aug = probe_train_transform(recipe, src.img_size, src.mean, src.std, src.in_chans)
    dataset = SeededTransformDataset(source, aug, seed)
    sampler = ShardedBatchSampler(len(dataset), batch_size, world, rank, seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    spe = len(sampler)
    if recipe == "mae":  # per-iteration warmup + cosine (MAE util/lr_sched.py)
        sched = warmup_cosine(lr, 0.0, epochs, spe, warmup)
    else:  # CosineAnnealingLR(T_max=epochs) stepped once per epoch
        sched = torch.tensor([lr * 0.5 * (1 + math.cos(math.pi * (s // spe) / epochs)) for s in range(epochs * spe)])
    step = 0
    evals = []
    for epoch in range(epochs):
        head.train()
        sampler.set_epoch(epoch)
        for imgs, y, _, _ in loader:
            for grp in opt.param_groups:
                grp["lr"] = float(sched[step])
            with torch.no_grad():
                f = encode(encoder, imgs.to(device, non_blocking=True), feature)
            loss = F.cross_entropy(head(f), y.to(device))
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            step += 1
        plain = acc.unwrap_model(head).eval()
        with torch.no_grad():
            pred = torch.cat([plain(fte[s:s + 4096].to(device)).argmax(-1).cpu()
                              for s in range(0, fte.shape[0], 4096)])
        evals.append({"epoch": epoch + 1, "top1": 100.0 * (pred == yte).double().mean().item(),
                      "loss": float(loss.item())})
        if acc.is_main_process:
            log.info("augmented probe epoch %d/%d: loss %.4f, test top1 %.2f", epoch + 1, epochs, loss.item(),
                     evals[-1]["top1"])
    t_train = time.perf_counter() - t0
    return {"evaluator": "linear_probe", "mode": "augmented", "recipe": recipe, "top1": evals[-1]["top1"],
            **best_over_epochs(evals), "evals": evals, "epochs": epochs, "method": src.method,
            "warmup_epochs": warmup, "blr": blr, "lr": lr, "batch_size": eff_batch, "feature": feature,
            "checkpoint": str(src.path), "checkpoint_fingerprint": src.fingerprint, "data": data_record(train, test),
            "train_size": len(train.indices), "test_size": len(test.indices), "feature_dim": dim,
            "train_seconds": t_train, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m sslab.eval.linear_probe CHECKPOINT --data DATA [...]``: probe accuracy, JSON in the run folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m sslab.eval.linear_probe", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--mode", choices=("cached", "augmented"), default="cached")
    ap.add_argument("--epochs", type=int, default=None, help="cached: 100; augmented: the recipe's (MAE 90, DINO 100)")
    ap.add_argument("--lrs", type=converter(tuple[float, ...], "lrs", DEFAULT_LRS), default=DEFAULT_LRS,
                    help="cached: base lrs of the grid (batch 256)")
    ap.add_argument("--wds", type=converter(tuple[float, ...], "wds", DEFAULT_WDS), default=DEFAULT_WDS,
                    help="cached: weight decays of the grid")
    ap.add_argument("--head-batch-size", type=int, default=256, help="cached: batch of the head training")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="cached: training images held out for selection")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                    help="augmented: MAE (LARS, BN, MAE crop) or DINO (SGD, bilinear crop); default: the method's")
    ap.add_argument("--batch-norm", choices=("auto", "true", "false"), default="auto",
                    help="cached: BatchNorm1d(affine=False) before the heads; auto: MAE yes, DINO no")
    ap.add_argument("--blr", type=float, default=None, help="augmented: base lr (default: the recipe's)")
    ap.add_argument("--warmup-epochs", type=float, default=None, help="augmented: default the recipe's share")
    args = ap.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        ap.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    acc = make_accelerator("no")
    src = source_from_args(args)
    feature = args.feature or probe_feature(src.method, src.encoder)
    train, test = splits_from_args(args, src)
    if args.mode == "cached":
        bn = probe_batch_norm(src.method) if args.batch_norm == "auto" else args.batch_norm == "true"
        epochs = args.epochs or 100
        name = args.name or record_name("linear", feature, train, test, epochs, {
            "lrs": args.lrs, "wds": args.wds, "bn": bn, "hb": args.head_batch_size, "vf": args.val_fraction,
            "seed": args.seed})
        result = run_linear_probe(src, train, test, feature, args.lrs, args.wds, epochs,
                                  args.head_batch_size, args.val_fraction, args.batch_size, args.num_workers,
                                  acc.device, not args.no_cache, args.seed, bn)
        tables = {"grid": result["grid"]}
    else:
        recipe = args.recipe or probe_recipe(src.method)
        epochs = int(args.epochs or RECIPES[recipe]["epochs"])
        name = args.name or record_name(f"linear-aug-{recipe}", feature, train, test, epochs, {
            "blr": args.blr, "warmup": args.warmup_epochs, "batch": args.batch_size * acc.num_processes,
            "seed": args.seed})
        result = run_augmented_probe(src, train, test, feature, recipe, epochs, args.blr,
                                     args.warmup_epochs, args.batch_size, args.num_workers, acc, args.seed,
                                     not args.no_cache)
        tables = {"evals": result["evals"]}
    result["world_size"] = acc.num_processes
    if acc.is_main_process:
        report(name, result, src.config, src.run_dir, args.output_dir, args.wandb_mode, tables)
        print(f"linear probe ({args.mode}, {feature}): top1 {result['top1']:.2f}, best over epochs "
              f"{result['top1_best_over_epochs']:.2f} (epoch {result['best_epoch']})", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
