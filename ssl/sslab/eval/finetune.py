"""End-to-end fine-tuning of a pretrained encoder with timm's utilities (MAE, He et al. 2021, Sec. A.3
and Table 9; official ``main_finetune.py`` + ``util/lr_decay.py``).

- layer-wise lr decay: parameter group lr scale ``d ** (L - layer)``, layer 0 the patch embedding
  (and class token / positions), layer i the i-th block, the top the norm and head (timm's
  ``group_matcher``). d = 0.65 for ViT-B and smaller, 0.75 for larger. Swin is decayed per stage
  (timm's coarse groups: layer i = stage i), with d = 0.65 up to Swin-B, 0.75 larger;
- drop path (``drop_path_rate`` to ``timm.create_model``; 0.1 ViT-B, 0.2 ViT-L, 0.3 ViT-H);
- ``timm.data.Mixup`` (mixup 0.8, cutmix 1.0, label smoothing 0.1) with ``SoftTargetCrossEntropy``;
- ``timm.data.create_transform`` with RandAugment ``rand-m9-mstd0.5-inc1``, bicubic, random erasing 0.25;
- ViT: ``global_pool='avg'`` with ``fc_norm`` (the encoder's final norm is dropped, as in MAE);
- AdamW (0.9, 0.999), wd 0.05, base lr 5e-4 (1e-3 for larger) x batch/256, 5 warmup epochs then
  cosine to 1e-6 per iteration, 100 epochs (50 for ViT-L/H in the paper; give ``--epochs``).

    python -m sslab.eval.finetune runs/mae_demo --data demo --epochs 20
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from typing import Any

import numpy as np
import timm
import torch
from timm.data import Mixup, create_transform
from timm.loss import SoftTargetCrossEntropy
from timm.models import group_parameters
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.transforms import v2

from ..errors import SslabError
from ..data.sampler import ShardedBatchSampler
from ..data.seeding import sample_seed
from ..engine.distributed import make_accelerator
from ..schedules import warmup_cosine
from .cli import add_common_args, eval_preprocess, open_labelled, source_from_args
from .features import dataset_labels, world_info
from .results import report

log = logging.getLogger("sslab")


def default_layer_decay(model: nn.Module) -> float:
    """MAE Table 9: 0.65 for ViT-B (and smaller), 0.75 for ViT-L/H; the same per stage for Swin
    (0.65 up to Swin-B, embed dim 128; 0.75 for Swin-L)."""
    if isinstance(model, SwinTransformer):
        return 0.75 if model.embed_dim >= 192 else 0.65
    return 0.75 if model.embed_dim >= 1024 else 0.65


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Parameter name -> layer id from timm's ``group_matcher``: per block for ViT (MAE ``get_layer_id_for_vit``),
    per stage for Swin (``coarse=True``). Parameters no group claims (head, fc_norm) get the top id."""
    coarse = isinstance(model, SwinTransformer)
    ids = group_parameters(model, model.group_matcher(coarse=coarse), reverse=True)
    top = max(ids.values()) + 1
    return {n: ids.get(n, top) for n, _ in model.named_parameters()}


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float,
                       no_weight_decay: set[str] | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups with ``lr_scale = layer_decay ** (top - layer)`` and ``weight_decay`` on
    weights only (not on 1-D parameters, biases, or ``no_weight_decay`` names such as the class token and
    position embeddings), like timm's ``param_groups_layer_decay`` and MAE's ``param_groups_lrd``."""
    nwd = set(no_weight_decay if no_weight_decay is not None else getattr(model, "no_weight_decay", set)())
    ids = layer_ids(model)
    top = max(ids.values())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or name.endswith(".bias") or name in nwd)
        key = (ids[name], decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "layer": ids[name], "lr_scale": layer_decay ** (top - ids[name]),
                           "weight_decay": weight_decay if decay else 0.0, "wd_scale": 1.0 if decay else 0.0}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_classifier(src, num_classes: int, drop_path: float, global_pool: str = "avg") -> nn.Module:
    """The encoder's architecture with a classification head, initialised from the encoder's weights.

    ViT with ``global_pool='avg'``: timm adds ``fc_norm`` and drops the final ``norm`` (MAE fine-tuning);
    the head is N(0, 2e-5) (MAE ``trunc_normal_(head.weight, std=2e-5)``).
    """
    if src.arch is None or src.arch[0] is None:
        raise SslabError(f"{src.path}: the encoder's timm architecture is unknown; pass --model NAME "
                         "(and --model-kwargs) for an official weight file")
    name, kwargs = src.arch
    kwargs = dict(kwargs)
    extra: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path}
    if isinstance(src.encoder, VisionTransformer):
        extra["global_pool"] = global_pool
    model = timm.create_model(name, pretrained=False, **{**kwargs, **extra})
    state = src.encoder.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    ok_missing = ("head.", "fc_norm.")
    ok_unexpected = ("norm.",) if isinstance(model, VisionTransformer) and global_pool == "avg" else ()
    bad = ([k for k in missing if not k.startswith(ok_missing)]
           + [k for k in unexpected if not k.startswith(ok_unexpected)])
    if bad:
        raise SslabError(f"the encoder's weights do not fit {name} with a head: missing/unexpected {bad[:6]}")
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            nn.init.trunc_normal_(head.weight, std=2e-5)
            nn.init.zeros_(head.bias)
    return model


class _SeededTrain(torch.utils.data.Dataset):
    """Training items keyed ``(epoch, index)`` (:class:`~sslab.data.sampler.ShardedBatchSampler`), each
    augmented under its own seed of python ``random`` and torch (timm's augmentations use both)."""

    def __init__(self, dataset, indices: list[int], transform, seed: int):
        self.dataset, self.indices, self.transform, self.seed = dataset, indices, transform, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        img, label = self.dataset[self.indices[i]]
        s = sample_seed(self.seed, epoch, i, "augment")
        state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(s)
                torch.manual_seed(s)
                x = self.transform(img)
        finally:
            random.setstate(state)
        return x, label


def train_transform(img_size: int, mean, std, in_chans: int):
    """timm's fine-tuning augmentation on PIL RGB; uint8 tensors are converted, 1-channel models get one channel."""
    mean3 = tuple(mean) * 3 if len(mean) == 1 else tuple(mean)
    std3 = tuple(std) * 3 if len(std) == 1 else tuple(std)
    tf = create_transform(img_size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic",
                          re_prob=0.25, re_mode="pixel", re_count=1, mean=mean3, std=std3)

    def apply(img):
        if torch.is_tensor(img):
            img = v2.functional.to_pil_image(img)
        x = tf(img.convert("RGB"))
        return x[:in_chans]  # a grey image stays grey under RandAugment, so one channel keeps it all

    return apply


@torch.no_grad()
def evaluate(model: nn.Module, dataset, indices: list[int], transform, batch_size: int, num_workers: int,
             device) -> dict[str, float]:
    """Top-1/top-5 (%) of ``model`` on ``dataset[indices]``; sharded over processes, counts summed."""
    from .features import _Indexed

    rank, world = world_info()
    view = torch.utils.data.Subset(_Indexed(dataset, indices, transform), list(range(rank, len(indices), world)))
    loader = torch.utils.data.DataLoader(view, batch_size=batch_size, num_workers=num_workers)
    model.eval()
    c = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y, _ in loader:
        logits = model(x.to(device))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        c[0] += (top[:, 0] == y).sum()
        c[1] += (top == y[:, None]).any(dim=1).sum()
        c[2] += y.numel()
    if world > 1:
        torch.distributed.all_reduce(c)
    return {"top1": 100.0 * c[0].item() / c[2].item(), "top5": 100.0 * c[1].item() / c[2].item()}


def run_finetune(src, train, test, epochs: int = 100, batch_size: int = 64, blr: float | None = None,
                 layer_decay: float | None = None, weight_decay: float = 0.05, drop_path: float | None = None,
                 warmup_epochs: float = 5, min_lr: float = 1e-6, mixup: float = 0.8, cutmix: float = 1.0,
                 smoothing: float = 0.1, global_pool: str = "avg", eval_every: int = 0, num_workers: int = 0,
                 mixed_precision: str = "no", accelerator=None, seed: int = 0) -> dict[str, Any]:
    """Fine-tune ``src``'s encoder on ``train`` and return the result (``top1``: final test accuracy,
    ``max_top1`` over the evaluations). ``batch_size`` is per process."""
    acc = accelerator or make_accelerator(mixed_precision)
    device, world, rank = acc.device, acc.num_processes, acc.process_index
    large = (src.encoder.embed_dim >= 1024) if isinstance(src.encoder, VisionTransformer) else \
        (isinstance(src.encoder, SwinTransformer) and src.encoder.embed_dim >= 192)
    blr = blr if blr is not None else (1e-3 if large else 5e-4)
    drop_path = drop_path if drop_path is not None else (0.2 if large else 0.1)
    layer_decay = layer_decay if layer_decay is not None else default_layer_decay(src.encoder)
    if warmup_epochs > epochs:
        raise SslabError(f"warmup_epochs {warmup_epochs} exceeds epochs {epochs}; lower --warmup-epochs")
    labels_tr, labels_te = dataset_labels(train.dataset), dataset_labels(test.dataset)
    num_classes = int(max(labels_tr.max(), labels_te.max())) + 1
    torch.manual_seed(seed)
    np.random.seed(seed)  # timm Mixup draws lambda with numpy
    model = build_classifier(src, num_classes, drop_path, global_pool).to(device)
    groups = layer_decay_groups(model, weight_decay, layer_decay)
    eff_batch = batch_size * world
    lr = blr * eff_batch / 256
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr, betas=(0.9, 0.999))
    model, opt = acc.prepare(model, opt)

    data = _SeededTrain(train.dataset, train.indices, train_transform(src.img_size, src.mean, src.std, src.in_chans),
                        seed)
    sampler = ShardedBatchSampler(len(data), batch_size, world, rank, seed)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    mix = None
    if mixup > 0 or cutmix > 0:
        if batch_size % 2:
            raise SslabError(f"mixup/cutmix need an even batch per process, got {batch_size}")
        mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing, num_classes=num_classes)
    criterion = SoftTargetCrossEntropy() if mix is not None else nn.CrossEntropyLoss(label_smoothing=smoothing)
    spe = len(sampler)
    sched = warmup_cosine(lr, min_lr, epochs, spe, warmup_epochs)
    tf_eval = eval_preprocess(src)
    evals: list[dict[str, float]] = []
    t0 = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        model.train()
        sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mix is not None:
                x, y = mix(x, y)
            for g in opt.param_groups:
                g["lr"] = float(sched[step]) * g.get("lr_scale", 1.0)
            with acc.autocast():
                loss = criterion(model(x), y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"fine-tuning loss is {loss.item()} at epoch {epoch}; lower --blr")
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            step += 1
        last = epoch == epochs - 1
        if last or (eval_every and (epoch + 1) % eval_every == 0):
            r = evaluate(acc.unwrap_model(model), test.dataset, test.indices, tf_eval, batch_size, num_workers, device)
            evals.append({"epoch": epoch + 1, **r, "loss": float(loss.item())})
            if acc.is_main_process:
                log.info("finetune epoch %d: test top1 %.2f", epoch + 1, r["top1"])
    return {"evaluator": "finetune", "top1": evals[-1]["top1"], "top5": evals[-1]["top5"],
            "max_top1": max(e["top1"] for e in evals), "evals": evals, "epochs": epochs, "batch_size": eff_batch,
            "blr": blr, "lr": lr, "layer_decay": layer_decay, "weight_decay": weight_decay, "drop_path": drop_path,
            "warmup_epochs": warmup_epochs, "min_lr": min_lr, "mixup": mixup, "cutmix": cutmix, "smoothing": smoothing,
            "global_pool": global_pool, "checkpoint": str(src.path), "checkpoint_fingerprint": src.fingerprint,
            "data": train.spec, "train_size": len(train.indices), "test_size": len(test.indices),
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m sslab.eval.finetune CHECKPOINT --data DATA [...]``: fine-tuned accuracy, JSON in the run folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m sslab.eval.finetune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.set_defaults(batch_size=64)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--blr", type=float, default=None, help="base lr at batch 256 (5e-4; 1e-3 for ViT-L/H)")
    ap.add_argument("--layer-decay", type=float, default=None, help="0.65 (ViT-B, Swin-B and smaller), 0.75 larger")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--drop-path", type=float, default=None, help="0.1 (0.2 for ViT-L/H)")
    ap.add_argument("--warmup-epochs", type=float, default=5)
    ap.add_argument("--min-lr", type=float, default=1e-6)
    ap.add_argument("--mixup", type=float, default=0.8)
    ap.add_argument("--cutmix", type=float, default=1.0)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--global-pool", choices=("avg", "token"), default="avg", help="ViT: avg + fc_norm (MAE) or token")
    ap.add_argument("--eval-every", type=int, default=0, help="also evaluate every N epochs (0: at the end)")
    ap.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    args = ap.parse_args(argv)
    acc = make_accelerator(args.mixed_precision)
    src = source_from_args(args)
    train = open_labelled(args.data, "train", src.in_chans, args.train_size, args.seed, args.in_memory)
    test = open_labelled(args.data, "test", src.in_chans, args.test_size, args.seed, args.in_memory)
    result = run_finetune(src, train, test, args.epochs, args.batch_size, args.blr, args.layer_decay,
                          args.weight_decay, args.drop_path, args.warmup_epochs, args.min_lr, args.mixup, args.cutmix,
                          args.smoothing, args.global_pool, args.eval_every, args.num_workers, args.mixed_precision,
                          acc, args.seed)
    result["world_size"] = acc.num_processes
    if acc.is_main_process:
        report(args.name or "finetune", result, src.config, src.run_dir, args.output_dir, args.wandb_mode,
               tables={"evals": result["evals"]})
        print(f"fine-tuning: top1 {result['top1']:.2f} (max {result['max_top1']:.2f})", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
