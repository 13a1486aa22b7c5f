"""Cached-feature linear probe vs the papers' augmented probe: wall time and accuracy, same encoder and data.

    python benchmarks/probe_speed.py --checkpoint runs/mae_demo            # an existing run
    python benchmarks/probe_speed.py --pretrain-steps 150                   # pretrain experiments/mae_demo.py first

The cached probe is timed cold (an empty feature cache: one pass of the frozen encoder over the train
and test images, then the whole (lr, wd) grid of heads) and warm (features from the cache). The
augmented probe runs ``--aug-epochs`` epochs of random crops + flips through the frozen encoder with
one head (MAE recipe: BN + linear, LARS; or DINO's SGD), then scores the test images. Both use the
same class-balanced train/test subsets. Wall time and process CPU time are reported: on a shared
machine the CPU time is the steadier of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="run folder or checkpoint (default: pretrain one)")
    ap.add_argument("--pretrain-steps", type=int, default=150,
                    help="steps of experiments/mae_demo.py when no --checkpoint")
    ap.add_argument("--run-dir", default="runs/bench_probe_speed", help="where the pretraining run goes")
    ap.add_argument("--data", default="demo")
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--feature", default="cls")
    ap.add_argument("--recipe", choices=("mae", "dino"), default="mae")
    ap.add_argument("--aug-epochs", type=int, default=20, help="epochs of the augmented probe (paper: 90 / 100)")
    ap.add_argument("--aug-blr", type=float, default=None, help="base lr of the augmented probe (default: recipe's)")
    ap.add_argument("--cached-epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sslab import train
    from sslab.engine.checkpoint import list_checkpoints
    from sslab.eval.cli import eval_preprocess, labelled_splits, open_encoder
    from sslab.eval.features import encode
    from sslab.eval.linear_probe import run_augmented_probe, run_linear_probe

    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = args.run_dir
        if not list_checkpoints(ckpt):
            cfg = runpy.run_path(str(ROOT / "experiments" / "mae_demo.py"))["CONFIG"]
            train(cfg.replace(output_dir=args.run_dir, max_steps=args.pretrain_steps, wandb_mode="disabled",
                              progress_bar=False, resume="auto"))
    # A private, empty feature cache: the cold timing really extracts.
    os.environ["SSLAB_CACHE"] = tempfile.mkdtemp(prefix="sslab_probe_bench_")
    src = open_encoder(ckpt)
    trn, tst = labelled_splits(args.data, None, None, src.in_chans, args.train_size, args.test_size, 0)
    common = dict(batch_size=args.batch_size, num_workers=args.num_workers)
    with torch.no_grad():  # warm up the kernels so neither timing pays one-off start-up costs
        x = torch.stack([eval_preprocess(src)(trn.dataset[i][0]) for i in trn.indices[:args.batch_size]])
        for _ in range(2):
            encode(src.encoder, x, args.feature)

    def cached():
        return run_linear_probe(src, trn, tst, args.feature, epochs=args.cached_epochs, **common)

    cold, w_cold, c_cold = timed(cached)
    warm, w_warm, c_warm = timed(cached)
    assert warm["feature_cache_hit"] and not cold["feature_cache_hit"]
    aug, w_aug, c_aug = timed(lambda: run_augmented_probe(src, trn, tst, args.feature, args.recipe, args.aug_epochs,
                                                          args.aug_blr, **common))
    out = {
        "checkpoint": str(src.path), "data": args.data, "train_size": len(trn.indices), "test_size": len(tst.indices),
        "feature": args.feature, "threads": torch.get_num_threads(),
        "cached": {"top1": cold["top1"], "wall_s": w_cold, "cpu_s": c_cold, "heads": len(cold["grid"]),
                   "epochs": args.cached_epochs, "best": cold["best"], "feature_s": cold["feature_seconds"],
                   "head_s": cold["head_seconds"]},
        "cached_warm": {"top1": warm["top1"], "wall_s": w_warm, "cpu_s": c_warm},
        "augmented": {"top1": aug["top1"], "wall_s": w_aug, "cpu_s": c_aug, "recipe": args.recipe,
                      "epochs": args.aug_epochs, "lr": aug["lr"]},
    }
    out["speedup_wall"] = w_aug / w_cold
    out["speedup_cpu"] = c_aug / c_cold
    out["top1_gap"] = out["cached"]["top1"] - out["augmented"]["top1"]
    lines = [
        f"probe speed: {out['train_size']} train / {out['test_size']} test images of {args.data}, feature "
        f"{args.feature}, {out['threads']} torch threads, checkpoint {src.path}",
        f"{'probe':<34}{'top1 %':>8}{'wall s':>9}{'cpu s':>9}",
        f"{'cached, cold (%d heads x %d ep)' % (out['cached']['heads'], args.cached_epochs):<34}"
        f"{cold['top1']:>8.2f}{w_cold:>9.1f}{c_cold:>9.1f}",
        f"{'cached, warm (features cached)':<34}{warm['top1']:>8.2f}{w_warm:>9.1f}{c_warm:>9.1f}",
        f"{'augmented %s (%d ep)' % (args.recipe, args.aug_epochs):<34}{aug['top1']:>8.2f}{w_aug:>9.1f}{c_aug:>9.1f}",
        f"cached cold is {out['speedup_wall']:.1f}x cheaper in wall time ({out['speedup_cpu']:.1f}x in CPU time), "
        f"top-1 {out['top1_gap']:+.2f} points",
    ]
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
