"""End-to-end fine-tuning of a pretrained encoder as a training run of its own (MAE, He et al. 2021,
Sec. A.3 and Table 9; official ``main_finetune.py`` + ``util/lr_decay.py``; Swin: SimMIM/GreenMIM).

The recipe (every default follows the paper for the encoder's size):

- layer-wise lr decay: parameter group lr scale ``d ** (top - layer)``. ViT: layer 0 the patch
  embedding (and class token / positions), layer i the i-th block, the top the norm and head; d = 0.65
  for ViT-B and smaller, 0.75 for ViT-L/H (Table 9). Swin, ``--layer-decay-mode block`` (the default,
  the recipe of SimMIM ``get_swin_layer_id`` and GreenMIM): every block its own layer, the patch
  merging with the block before it, d = 0.9. ``--layer-decay-mode stage``: one layer per stage, d =
  0.65 up to Swin-B, 0.75 larger (sslab's earlier rule; no paper uses it);
- drop path per model size (``drop_path_rate``): 0.1 up to ViT-B, 0.2 ViT-L, 0.3 ViT-H (MAE A.3); Swin 0.1;
- ``timm.data.Mixup`` (mixup 0.8, cutmix 1.0, label smoothing 0.1) with ``SoftTargetCrossEntropy``;
- ``timm.data.create_transform``: RandomResizedCrop, RandAugment ``rand-m9-mstd0.5-inc1``, bicubic,
  random erasing 0.25; the eval transform is the paper's (:mod:`sslab.eval.preprocess`);
- ViT: ``global_pool='avg'`` with ``fc_norm`` (the encoder's final norm is dropped, as in MAE);
- AdamW (0.9, 0.999), wd 0.05, base lr 5e-4 (1e-3 for ViT-L/H) x effective batch / 256, where the
  effective batch is batch x accum_iter x processes; 5 warmup epochs, then cosine to 1e-6 per
  iteration; 100 epochs (50 for ViT-L/H in the paper; give ``--epochs``).

As a run: progress and per-epoch loss / test accuracy on the console and in ``metrics.jsonl`` +
wandb; a checkpoint at every epoch end (atomic, last ``--keep-last`` kept) and ``--resume auto``
(continues from the newest one with the same result as an uninterrupted run: every epoch's random
streams are seeded from (seed, epoch)); ``--mixed-precision bf16|fp16``; ``--img-size`` other than
the pretraining one interpolates the position embeddings (timm ``resample_abs_pos_embed``, bicubic).
The fine-tuned classifier is written as ``model.safetensors`` + timm ``config.json`` in the run
folder (``timm.create_model("local-dir:<folder>", pretrained=True)`` loads it with its head).

    python -m sslab.eval.finetune runs/mae_demo --data demo --epochs 20
    python -m sslab.eval.finetune runs/mae_demo --data demo --epochs 20 --resume auto   # after an interruption
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import timm
from PIL import Image
import torch
from safetensors.torch import save_file
from timm.data import Mixup, create_transform
from timm.layers import resample_abs_pos_embed
from timm.loss import SoftTargetCrossEntropy
from timm.models import group_parameters
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.transforms import v2

from ..errors import SslabError
from ..data.sampler import ShardedBatchSampler
from ..data.seeding import sample_seed
from ..engine.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from ..engine.distributed import make_accelerator
from ..engine.logger import RunLogger
from ..schedules import warmup_cosine
from .cli import add_common_args, source_from_args, splits_from_args
from .features import dataset_labels, world_info
from .preprocess import eval_image_transform, to_channels
from .results import best_over_epochs, data_record, record_name, report, wandb_target

log = logging.getLogger("sslab")

CLASSIFIER_WEIGHTS = "model.safetensors"


def model_size(model: nn.Module) -> str:
    """'huge' (ViT width >= 1280), 'large' (ViT 1024, Swin >= 192) or 'base' (the rest): the rows of MAE Table 9."""
    if isinstance(model, SwinTransformer):
        return "large" if model.embed_dim >= 192 else "base"
    dim = getattr(model, "embed_dim", 0)
    return "huge" if dim >= 1280 else "large" if dim >= 1024 else "base"


def default_drop_path(model: nn.Module) -> float:
    """MAE A.3: drop path 0.1 (ViT-B and smaller), 0.2 (ViT-L), 0.3 (ViT-H)."""
    return {"base": 0.1, "large": 0.2, "huge": 0.3}[model_size(model)]


def default_blr(model: nn.Module) -> float:
    """MAE Table 9: base lr 5e-4 for ViT-B, 1e-3 for ViT-L/H."""
    return 5e-4 if model_size(model) == "base" else 1e-3


def default_layer_decay(model: nn.Module, mode: str = "block") -> float:
    """MAE Table 9: 0.65 for ViT-B (and smaller), 0.75 for ViT-L/H. Swin per block (SimMIM/GreenMIM): 0.9;
    Swin per stage: 0.65 up to Swin-B (embed dim 128), 0.75 for Swin-L."""
    if isinstance(model, SwinTransformer):
        if mode == "block":
            return 0.9
        return 0.75 if model.embed_dim >= 192 else 0.65
    return 0.75 if model.embed_dim >= 1024 else 0.65


def swin_block_layer_ids(model: SwinTransformer) -> dict[str, int]:
    """SimMIM ``get_swin_layer_id`` on timm's Swin names: patch embedding 0, block b of stage s
    ``1 + sum(depths[:s]) + b``, the patch merging that opens stage s (timm's ``layers.s.downsample``, the
    end of stage s-1 in SimMIM) ``sum(depths[:s])``, the final norm and head ``sum(depths) + 1``."""
    depths = [len(stage.blocks) for stage in model.layers]
    top = sum(depths) + 1
    ids = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if name.startswith(("patch_embed", "absolute_pos_embed")):
            ids[name] = 0
        elif parts[0] == "layers" and parts[2] == "blocks":
            s, b = int(parts[1]), int(parts[3])
            ids[name] = 1 + sum(depths[:s]) + b
        elif parts[0] == "layers" and parts[2] == "downsample":
            ids[name] = sum(depths[:int(parts[1])])
        else:
            ids[name] = top
    return ids


def layer_ids(model: nn.Module, mode: str = "block") -> dict[str, int]:
    """Parameter name -> layer id: per block for ViT (timm ``group_matcher``, MAE ``get_layer_id_for_vit``);
    Swin per block (``mode='block'``, :func:`swin_block_layer_ids`) or per stage (``'stage'``, timm's coarse
    groups). Parameters no group claims (head, fc_norm) get the top id."""
    if mode not in ("block", "stage"):
        raise SslabError(f"layer decay mode {mode!r} is not known; use 'block' or 'stage'")
    if isinstance(model, SwinTransformer) and mode == "block":
        return swin_block_layer_ids(model)
    coarse = isinstance(model, SwinTransformer)
    ids = group_parameters(model, model.group_matcher(coarse=coarse), reverse=True)
    top = max(ids.values()) + 1
    return {n: ids.get(n, top) for n, _ in model.named_parameters()}


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float,
                       no_weight_decay: set[str] | None = None, mode: str = "block") -> list[dict[str, Any]]:
    """AdamW parameter groups with ``lr_scale = layer_decay ** (top - layer)`` and ``weight_decay`` on
    weights only (not on 1-D parameters, biases, or ``no_weight_decay`` names such as the class token and
    position embeddings), like timm's ``param_groups_layer_decay`` and MAE's ``param_groups_lrd``."""
    nwd = set(no_weight_decay if no_weight_decay is not None else getattr(model, "no_weight_decay", set)())
    ids = layer_ids(model, mode)
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


def build_classifier(src, num_classes: int, drop_path: float, global_pool: str = "avg",
                     img_size: int | None = None) -> nn.Module:
    """The encoder's architecture with a classification head, initialised from the encoder's weights.

    ViT with ``global_pool='avg'``: timm adds ``fc_norm`` and drops the final ``norm`` (MAE fine-tuning);
    the head is N(0, 2e-5) (MAE ``trunc_normal_(head.weight, std=2e-5)``). ``img_size`` other than the
    encoder's: the ViT position embeddings are resampled to the new patch grid (bicubic, the class
    token's kept), as MAE's ``interpolate_pos_embed``.
    """
    if src.arch is None or src.arch[0] is None:
        raise SslabError(f"{src.path}: the encoder's timm architecture is unknown; pass --model NAME "
                         "(and --model-kwargs) for an official weight file")
    name, kwargs = src.arch
    kwargs = dict(kwargs)
    extra: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path}
    if isinstance(src.encoder, VisionTransformer):
        extra["global_pool"] = global_pool
    if img_size is not None:
        extra["img_size"] = img_size
    try:
        model = timm.create_model(name, pretrained=False, **{**kwargs, **extra})
    except (AssertionError, ValueError) as e:
        raise SslabError(f"{name} cannot be built at img_size {img_size}: {e}; choose a size the patches "
                         "(and Swin windows) divide") from None
    state = dict(src.encoder.state_dict())
    if "pos_embed" in state and hasattr(model, "pos_embed") and state["pos_embed"].shape != model.pos_embed.shape:
        prefix = 0 if getattr(src.encoder, "no_embed_class", False) else src.encoder.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], list(model.patch_embed.grid_size),
                                                    num_prefix_tokens=prefix)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise SslabError(f"the encoder's weights do not fit {name} at img_size {img_size}: "
                         f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}; "
                         "fine-tune at the pretraining size") from None
    ok_missing = ("head.", "fc_norm.")
    ok_unexpected = ("norm.",) if isinstance(model, VisionTransformer) and global_pool == "avg" else ()
    bad = ([k for k in missing if not k.startswith(ok_missing) and "relative_position_index" not in k
            and "attn_mask" not in k]
           + [k for k in unexpected if not k.startswith(ok_unexpected)])
    if bad:
        raise SslabError(f"the encoder's weights do not fit {name} with a head: missing/unexpected {bad[:6]}; "
                         "check --model/--model-kwargs")
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            nn.init.trunc_normal_(head.weight, std=2e-5)
            nn.init.zeros_(head.bias)
    return model


class _SeededTrain(torch.utils.data.Dataset):
    """Training items keyed ``(epoch, index)`` (:class:`~sslab.data.sampler.ShardedBatchSampler`), each
    augmented under its own seed of python ``random``, numpy and torch (timm's augmentations use all three)."""

    def __init__(self, dataset, indices: list[int], transform, seed: int):
        self.dataset, self.indices, self.transform, self.seed = dataset, indices, transform, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        img, label = self.dataset[self.indices[i]]
        s = sample_seed(self.seed, epoch, i, "augment")
        state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(s)
                np.random.seed(s % (2 ** 32))  # timm's RandAugment picks its ops with numpy
                torch.manual_seed(s)
                x = self.transform(img)
        finally:
            random.setstate(state)
            np.random.set_state(np_state)
        return x, label


def _black_when_no_bits(fn):
    def posterize(img, bits_to_keep, **kw):
        return Image.new(img.mode, img.size) if bits_to_keep <= 0 else fn(img, bits_to_keep, **kw)
    return posterize


def _zero_bit_posterize_is_black(tf) -> None:
    """RandAugment's ``PosterizeIncreasing`` keeps 0 bits at magnitude 10 (reached with ``mstd0.5`` about 2% of
    the time): the Pillow of the MAE release made that a black image, Pillow >= 10 raises. Keep the old result."""
    for t in getattr(tf, "transforms", []):
        for op in getattr(t, "ops", []):
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = _black_when_no_bits(op.aug_fn)


def train_transform(img_size: int, mean, std, in_chans: int):
    """timm's fine-tuning augmentation on PIL RGB; uint8 tensors are converted, 1-channel models get one channel."""
    mean3 = tuple(mean) * 3 if len(mean) == 1 else tuple(mean)
    std3 = tuple(std) * 3 if len(std) == 1 else tuple(std)
    tf = create_transform(img_size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic",
                          re_prob=0.25, re_mode="pixel", re_count=1, mean=mean3, std=std3)
    _zero_bit_posterize_is_black(tf)

    def apply(img):
        if torch.is_tensor(img):
            img = v2.functional.to_pil_image(to_channels(img, in_chans))
        x = tf(to_channels(img, in_chans).convert("RGB"))  # timm's RandAugment works on RGB
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


def classifier_config(src, model: nn.Module, num_classes: int, img_size: int, global_pool: str,
                      classes: list[str] | None) -> dict[str, Any]:
    """timm's ``config.json`` of the fine-tuned classifier (``local-dir:`` loads it with its head)."""
    name, kwargs = src.arch
    args = {k: v for k, v in kwargs.items() if k not in ("num_classes", "drop_path_rate")}
    args.update(num_classes=num_classes, img_size=img_size)
    if isinstance(model, VisionTransformer):
        args["global_pool"] = global_pool
    pcfg = {"tag": f"sslab_finetuned_{src.method or 'encoder'}", "input_size": [src.in_chans, img_size, img_size],
            "interpolation": "bicubic", "crop_pct": 0.875 if img_size >= 64 else 1.0, "crop_mode": "center",
            "mean": list(src.mean), "std": list(src.std), "num_classes": num_classes,
            "first_conv": "patch_embed.proj", "classifier": "head"}
    args = json.loads(json.dumps(args))  # tuples -> lists
    return {"architecture": name, "num_classes": num_classes, "num_features": int(model.num_features),
            "model_args": args, "pretrained_cfg": pcfg, "label_names": classes}


def save_classifier(model: nn.Module, out_dir: Path, cfg: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (timm's ``local-dir`` layout); returns the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = out_dir / f".{CLASSIFIER_WEIGHTS}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(out_dir / CLASSIFIER_WEIGHTS)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    return out_dir


def _seed_epoch(seed: int, epoch: int) -> None:
    """Seed torch, numpy (timm Mixup's lambda and box) and python for ``epoch``: a run resumed at an epoch
    boundary draws exactly what the uninterrupted run drew."""
    s = int(hashlib.sha256(f"finetune/{seed}/{epoch}".encode()).hexdigest()[:15], 16)
    torch.manual_seed(s)
    np.random.seed(s % (2 ** 32))
    random.seed(s)


def run_finetune(src, train, test, epochs: int = 100, batch_size: int = 64, blr: float | None = None,
                 layer_decay: float | None = None, weight_decay: float = 0.05, drop_path: float | None = None,
                 warmup_epochs: float = 5, min_lr: float = 1e-6, mixup: float = 0.8, cutmix: float = 1.0,
                 smoothing: float = 0.1, global_pool: str = "avg", eval_every: int = 1, num_workers: int = 0,
                 mixed_precision: str = "no", accelerator=None, seed: int = 0, accum_iter: int = 1,
                 layer_decay_mode: str = "block", img_size: int | None = None, output_dir: str | Path | None = None,
                 resume: str = "", keep_last: int = 2, log_every: int = 20, wandb_mode: str = "disabled",
                 clip_grad: float | None = None) -> dict[str, Any]:
    """Fine-tune ``src``'s encoder on ``train``, score ``test`` every ``eval_every`` epochs (and at the end),
    and return the result: ``top1`` the final epoch's, ``top1_best_over_epochs`` the best (as MAE's script
    prints). ``batch_size`` is per process and micro-step; the effective batch is ``batch_size x accum_iter x
    processes``. With ``output_dir`` the run writes checkpoints, ``metrics.jsonl`` (+ wandb) and the
    classifier there, and ``resume='auto'`` continues from its newest checkpoint."""
    acc = accelerator or make_accelerator(mixed_precision)
    device, world, rank = acc.device, acc.num_processes, acc.process_index
    if accum_iter < 1 or epochs < 1 or batch_size < 1:
        raise SslabError(f"epochs {epochs}, batch_size {batch_size} and accum_iter {accum_iter} must be >= 1")
    if warmup_epochs > epochs:
        raise SslabError(f"warmup_epochs {warmup_epochs} exceeds epochs {epochs}; lower --warmup-epochs")
    if (mixup > 0 or cutmix > 0) and batch_size % 2:
        raise SslabError(f"mixup/cutmix need an even batch per process, got {batch_size}; use an even --batch-size")
    img_size = int(img_size or src.img_size)
    blr = blr if blr is not None else default_blr(src.encoder)
    drop_path = drop_path if drop_path is not None else default_drop_path(src.encoder)
    layer_decay = layer_decay if layer_decay is not None else default_layer_decay(src.encoder, layer_decay_mode)
    labels_tr, labels_te = dataset_labels(train.dataset), dataset_labels(test.dataset)
    num_classes = int(max(labels_tr.max(), labels_te.max())) + 1
    _seed_epoch(seed, -1)
    model = build_classifier(src, num_classes, drop_path, global_pool, img_size).to(device)
    groups = layer_decay_groups(model, weight_decay, layer_decay, mode=layer_decay_mode)
    eff_batch = batch_size * accum_iter * world
    lr = blr * eff_batch / 256
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr, betas=(0.9, 0.999))

    data = _SeededTrain(train.dataset, train.indices, train_transform(img_size, src.mean, src.std, src.in_chans),
                        seed)
    sampler = ShardedBatchSampler(len(data), batch_size, world, rank, seed)
    spe = len(sampler) // accum_iter  # optimiser steps per epoch
    if spe < 1:
        raise SslabError(f"{len(sampler)} batches of {batch_size} per epoch cannot fill accum_iter {accum_iter}; "
                         "lower --accum-iter or --batch-size")
    settings = {"epochs": epochs, "batch_size": batch_size, "accum_iter": accum_iter, "effective_batch": eff_batch,
                "blr": blr, "lr": lr, "layer_decay": layer_decay, "layer_decay_mode": layer_decay_mode
                if isinstance(src.encoder, SwinTransformer) else "block", "weight_decay": weight_decay,
                "drop_path": drop_path, "warmup_epochs": warmup_epochs, "min_lr": min_lr, "mixup": mixup,
                "cutmix": cutmix, "smoothing": smoothing, "global_pool": global_pool, "img_size": img_size,
                "pretrain_img_size": (src.config or {}).get("img_size"), "mixed_precision": acc.mixed_precision, "seed": seed,
                "clip_grad": clip_grad}

    out = Path(output_dir) if output_dir else None
    start_epoch, evals, step = 0, [], 0
    resume_path = resolve_resume(resume, out) if out is not None else None
    if resume_path is not None:
        ck = load_checkpoint(resume_path)
        if ck.get("kind") != "finetune" or ck.get("settings", {}).get("epochs") != epochs:
            raise SslabError(f"--resume {resume_path}: not a fine-tuning checkpoint of these settings "
                             f"(epochs {ck.get('settings', {}).get('epochs')} vs {epochs}); use another --output-dir")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, evals, step = int(ck["epoch"]), list(ck["evals"]), int(ck["step"])
        log.info("finetune: resumed from %s (epoch %d of %d)", resume_path, start_epoch, epochs)
    model, opt = acc.prepare(model, opt)
    if resume_path is not None and acc.scaler is not None and ck.get("scaler"):
        acc.scaler.load_state_dict(ck["scaler"])

    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=num_workers)
    mix = None
    if mixup > 0 or cutmix > 0:
        mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing, num_classes=num_classes)
    criterion = SoftTargetCrossEntropy() if mix is not None else nn.CrossEntropyLoss(label_smoothing=smoothing)
    sched = warmup_cosine(lr, min_lr, epochs, spe, warmup_epochs)
    tf_eval = eval_image_transform(img_size, src.mean, src.std, src.in_chans)
    logger = None
    if out is not None and acc.is_main_process:
        target = wandb_target(src.config, src.run_dir)
        logger = RunLogger(out, {"evaluator": "finetune", **settings, "checkpoint": str(src.path)}, wandb_mode,
                           target["project"], target["entity"], target["group"], f"{target['run_name']}/{out.name}",
                           ("finetune",))
    t0 = time.perf_counter()
    if acc.is_main_process:
        log.info("finetune: %d epochs x %d steps, effective batch %d (%d x accum %d x %d processes), lr %.3g, "
                 "layer decay %.3g, drop path %.2g, %d train / %d test images", epochs, spe, eff_batch, batch_size,
                 accum_iter, world, lr, layer_decay, drop_path, len(train.indices), len(test.indices))
    for epoch in range(start_epoch, epochs):
        model.train()
        _seed_epoch(seed, epoch)
        sampler.set_epoch(epoch)
        t_ep, loss_sum, n_loss, micro = time.perf_counter(), 0.0, 0, 0
        for x, y in loader:
            if micro // accum_iter >= spe:
                break  # the ragged micro-batches that cannot fill an optimiser step
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mix is not None:
                x, y = mix(x, y)
            last_micro = (micro + 1) % accum_iter == 0
            if micro % accum_iter == 0:
                for g in opt.param_groups:
                    g["lr"] = float(sched[step]) * g.get("lr_scale", 1.0)
            sync = nullcontext() if last_micro or world == 1 else acc.no_sync(model)
            with sync, acc.autocast():
                loss = criterion(model(x), y)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"fine-tuning loss is {loss.item()} at epoch {epoch}; lower --blr")
                acc.backward(loss / accum_iter)
            loss_sum, n_loss, micro = loss_sum + loss.item(), n_loss + 1, micro + 1
            if last_micro:
                if clip_grad:
                    acc.clip_grad_norm_(model.parameters(), clip_grad)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if acc.is_main_process and log_every and step % log_every == 0:
                    done = micro * batch_size * world
                    log.info("finetune epoch %d/%d step %d/%d: loss %.4f, lr %.3g, %.1f img/s", epoch + 1, epochs,
                             step - epoch * spe, spe, loss.item(), float(sched[step - 1]),
                             done / (time.perf_counter() - t_ep))
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_loss, 1), "lr": float(sched[step - 1]),
               "epoch_seconds": time.perf_counter() - t_ep}
        if epoch == epochs - 1 or (eval_every and (epoch + 1) % eval_every == 0):
            r = evaluate(acc.unwrap_model(model), test.dataset, test.indices, tf_eval, batch_size, num_workers, device)
            row.update(test_top1=r["top1"], test_top5=r["top5"])
            evals.append({"epoch": epoch + 1, **r, "loss": row["train_loss"]})
        if acc.is_main_process:
            log.info("finetune epoch %d/%d: train loss %.4f%s (%.0f s)", epoch + 1, epochs, row["train_loss"],
                     f", test top1 {row['test_top1']:.2f} top5 {row['test_top5']:.2f}" if "test_top1" in row else "",
                     row["epoch_seconds"])
            if logger is not None:
                logger.log({f"finetune/{k}": v for k, v in row.items()}, step)
            if out is not None:
                state = {"kind": "finetune", "model": acc.unwrap_model(model).state_dict(),
                         "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step, "evals": evals,
                         "settings": settings,
                         "scaler": acc.scaler.state_dict() if acc.scaler is not None else None}
                save_checkpoint(state, out, epoch + 1, keep_last)
        acc.wait_for_everyone()
    plain = acc.unwrap_model(model)
    saved = None
    if out is not None and acc.is_main_process:
        classes = getattr(train.dataset, "classes", None)
        saved = str(save_classifier(plain, out, classifier_config(src, plain, num_classes, img_size, global_pool,
                                                                  list(classes) if classes else None)))
    if logger is not None:
        logger.finish()
    return {"evaluator": "finetune", "top1": evals[-1]["top1"], "top5": evals[-1]["top5"],
            **best_over_epochs(evals), "max_top1": max(e["top1"] for e in evals), "evals": evals, **settings,
            "batch_size": eff_batch, "method": src.method, "checkpoint": str(src.path),
            "checkpoint_fingerprint": src.fingerprint, "data": data_record(train, test),
            "train_size": len(train.indices), "test_size": len(test.indices), "output_dir": str(out) if out else None,
            "classifier": saved, "resumed_from": str(resume_path) if resume_path else None,
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m sslab.eval.finetune CHECKPOINT --data DATA [...]``: a fine-tuning run (checkpoints, metrics,
    classifier in ``--run-dir``), its result JSON in the pretraining run's ``eval/``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m sslab.eval.finetune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.set_defaults(batch_size=64)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--accum-iter", type=int, default=1, help="micro-batches per optimiser step (effective batch = "
                                                              "batch x accum x processes)")
    ap.add_argument("--blr", type=float, default=None, help="base lr at batch 256 (5e-4; 1e-3 for ViT-L/H)")
    ap.add_argument("--layer-decay", type=float, default=None,
                    help="ViT: 0.65 (ViT-B and smaller), 0.75 larger; Swin per block 0.9, per stage 0.65/0.75")
    ap.add_argument("--layer-decay-mode", choices=("block", "stage"), default="block",
                    help="Swin: per block (SimMIM/GreenMIM, the recipe) or per stage")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--drop-path", type=float, default=None, help="0.1 (ViT-B and smaller), 0.2 ViT-L, 0.3 ViT-H")
    ap.add_argument("--warmup-epochs", type=float, default=5)
    ap.add_argument("--min-lr", type=float, default=1e-6)
    ap.add_argument("--mixup", type=float, default=0.8)
    ap.add_argument("--cutmix", type=float, default=1.0)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (MAE: none)")
    ap.add_argument("--global-pool", choices=("avg", "token"), default="avg", help="ViT: avg + fc_norm (MAE) or token")
    ap.add_argument("--eval-every", type=int, default=1, help="score the test split every N epochs (and at the end)")
    ap.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    ap.add_argument("--run-dir", default=None, help="the fine-tuning run's folder (checkpoints, metrics, classifier); "
                                                    "default <pretraining run>/finetune/<settings>")
    ap.add_argument("--resume", default="auto", help="auto (newest checkpoint in --run-dir), a checkpoint, or ''")
    ap.add_argument("--keep-last", type=int, default=2, help="checkpoints kept")
    ap.add_argument("--log-every", type=int, default=20, help="optimiser steps between progress lines")
    args = ap.parse_args(argv)
    acc = make_accelerator(args.mixed_precision)
    src = source_from_args(args)
    train, test = splits_from_args(args, src)
    settings = {k: getattr(args, k) for k in ("batch_size", "accum_iter", "blr", "layer_decay", "layer_decay_mode",
                                              "weight_decay", "drop_path", "warmup_epochs", "min_lr", "mixup",
                                              "cutmix", "smoothing", "global_pool", "img_size", "seed", "clip_grad")}
    settings["world"] = acc.num_processes
    name = args.name or record_name("finetune", None, train, test, args.epochs, settings)
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.output_dir or src.run_dir) / "finetune" / name
    result = run_finetune(src, train, test, args.epochs, args.batch_size, args.blr, args.layer_decay,
                          args.weight_decay, args.drop_path, args.warmup_epochs, args.min_lr, args.mixup, args.cutmix,
                          args.smoothing, args.global_pool, args.eval_every, args.num_workers, args.mixed_precision,
                          acc, args.seed, args.accum_iter, args.layer_decay_mode, args.img_size, run_dir,
                          args.resume, args.keep_last, args.log_every, args.wandb_mode, args.clip_grad)
    result["world_size"] = acc.num_processes
    if acc.is_main_process:
        report(name, result, src.config, src.run_dir, args.output_dir, args.wandb_mode,
               tables={"evals": result["evals"]})
        print(f"fine-tuning: top1 {result['top1']:.2f} (final), best over epochs {result['top1_best_over_epochs']:.2f} "
              f"(epoch {result['best_epoch']}); classifier in {result['classifier']}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
