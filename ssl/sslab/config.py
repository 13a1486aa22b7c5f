"""Run configuration: one flat dataclass; recipes in ``experiments/`` set fields, the CLI overrides any.

Every field ``foo_bar`` is ``--foo-bar VALUE`` on the command line (``--foo_bar`` works too).
Booleans take ``true/false`` (a bare ``--flag`` means true), tuples take commas
(``--wandb-tags a,b``), dicts take JSON (``--model-kwargs '{"depth": 6}'``), and ``none`` clears an
optional field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import SslabError


@dataclass
class Config:
    """All knobs of a pretraining run. Defaults are the MAE paper's ViT-B/16 recipe (Table 8/9)."""

    # --- run ---
    method: str = "mae"                      # "mae" | "dino"
    output_dir: str = "runs/default"         # checkpoints, logs and the resolved config go here
    seed: int = 0                            # seeds init, augmentation and masking (same on every process)
    resume: str = ""                         # "" (fresh), "auto" (newest checkpoint in output_dir) or a path
    allow_config_change: bool = False        # resume even if fields outside FREE_ON_RESUME changed (see below)

    # --- data ---
    data: str | None = "demo"                # ImageFolder dir, .tar of one, or "demo"; a recipe for your own data sets None (--data required)
    in_memory: bool = False                  # decode once into uint8 arrays (small datasets)
    skip_bad_files: bool = False             # skip undecodable images (counted in the log) instead of stopping
    num_workers: int = 8                     # DataLoader worker processes per training process
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)   # per-channel normalisation mean (one value per in_chans)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)    # per-channel normalisation std (one value per in_chans)
    augment_on_device: bool = True           # loader: uint8 crops only (reduced-size JPEG decode); flip/jitter/blur/solarise batched on the model's device, --in-memory images held and cropped there (false: torchvision per image)

    # --- encoder (timm) ---
    model: str = "vit_base_patch16_224"      # timm encoder name (a ViT or Swin)
    img_size: int = 224                      # training crop size in pixels
    patch_size: int | None = None            # None: the timm model's own
    in_chans: int = 3                        # 1 (images loaded as grayscale) or 3 (RGB)
    model_kwargs: dict = field(default_factory=dict)   # extra timm.create_model kwargs, e.g. {"depth": 6}

    # --- MAE ---
    mask_ratio: float = 0.75                 # fraction of patches removed; at least one must be removed and one kept
    norm_pix_loss: bool = True               # regress per-patch normalised pixels (MAE Table 1c)
    decoder_embed_dim: int = 512             # width of the MAE decoder
    decoder_depth: int = 8                   # blocks of the MAE decoder
    decoder_num_heads: int = 16              # attention heads of the MAE decoder
    crop_scale: tuple[float, float] = (0.2, 1.0)   # RandomResizedCrop area range (min,max) in (0, 1]

    # --- Swin ---
    swin_mae_mode: str = "visible"           # MAE on a timm Swin: "visible" (GreenMIM: encoder computes visible units only) | "mask_token" (SimMIM: all tokens, 1x1-conv head, L1 loss; decoder_* and norm_pix_loss unused)

    # --- DINO --- (Caron et al. 2021; defaults: official main_dino.py; shared fields: sslab/method_defaults.py)
    out_dim: int = 65536                     # prototypes K of the DINO head
    head_hidden_dim: int = 2048              # hidden width of the DINO head MLP
    head_bottleneck_dim: int = 256           # bottleneck before the prototypes
    head_nlayers: int = 3                    # layers of the DINO head MLP
    use_bn_in_head: bool = False             # batch norm in the DINO head MLP
    norm_last_layer: bool = True             # weight_g frozen at 1 (stabler; false is better for ViT-S)
    global_crops_size: int | None = None     # None: img_size
    global_crops_scale: tuple[float, float] = (0.4, 1.0)   # area range of the 2 global crops
    local_crops_number: int = 8              # local crops per image (0 disables multi-crop)
    local_crops_size: int = 96               # side of each local crop in pixels
    local_crops_scale: tuple[float, float] = (0.05, 0.4)   # area range of the local crops
    student_temp: float = 0.1                # tau_s of the student softmax
    warmup_teacher_temp: float = 0.04        # tau_t warms up linearly per epoch from this ...
    teacher_temp: float = 0.04               # ... to this, then stays (main_dino.py; its README's boosted run: 0.07 over 30 epochs)
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9             # EMA momentum of the teacher centre
    momentum_teacher: float = 0.996          # EMA momentum, cosine to 1 per iteration (0.9995 for batch 256)
    freeze_last_layer: int = 1               # epochs with the head's last layer frozen
    pos_interpolation: str = "dino"          # ViT positions for crops of another size: "dino" (official interpolate_pos_encoding: bicubic, scale (n+0.1)/sqrt(N), no antialias) | "timm" (timm's antialiased resize)

    # --- optimisation ---
    epochs: int = 800                        # passes over the training data
    batch_size: int = 64                     # per process
    accum_iter: int = 1                      # micro-batches per optimiser step
    effective_batch_size: int | None = None  # if set, accum_iter = this / (batch_size x processes)
    base_lr: float = 1.5e-4                  # lr = base_lr * effective_batch / 256
    lr: float | None = None                  # absolute lr; overrides base_lr when set
    min_lr: float = 0.0                      # end of the cosine lr schedule
    warmup_epochs: float = 40
    weight_decay: float = 0.05               # AdamW weight decay (weights only, not biases/norms)
    weight_decay_end: float | None = None    # None: constant; else cosine from weight_decay to this (DINO)
    betas: tuple[float, float] = (0.9, 0.95)   # AdamW (beta1,beta2)
    clip_grad: float | None = None           # max grad norm; None: no clipping (MAE)
    clip_grad_mode: str = "global"           # "global" (one norm over all) | "per_param" (each tensor, as DINO)
    mixed_precision: str = "no"              # "no" | "fp16" | "bf16"
    max_steps: int | None = None             # stop after this many optimiser steps (smoke tests, benchmarks)
    nonfinite_skip_limit: int = 0            # steps with a NaN/inf loss or gradients to skip (not apply) before stopping; 0: stop at the first
    fused_optimizer: bool = True             # torch's fused AdamW kernel (CPU and CUDA); false: torch's default loop
    compile: bool = False                    # torch.compile the networks and the DINO loss (first steps slower: compiling)
    grad_checkpointing: bool = False         # recompute each block in the backward pass: far less activation memory, ~1/3 more compute

    # --- checkpoints ---
    save_every_steps: int = 1000             # also saved at the end of every epoch
    keep_last: int = 3                       # newest checkpoints kept on disk

    # --- logging ---
    log_every: int = 20                      # optimiser steps between log rows
    progress_bar: bool = True                # tqdm bar on stderr (rank 0)
    wandb_mode: str = "auto"                 # auto (online with credentials, else offline) | online | offline | disabled
    wandb_project: str | None = None         # None: $WANDB_PROJECT, else "sslab"
    wandb_entity: str | None = None          # None: $WANDB_ENTITY, else your default entity
    wandb_group: str | None = None           # None: $WANDB_RUN_GROUP, else the run folder's name (its evaluations join it)
    wandb_name: str | None = None            # None: the run folder's name
    wandb_tags: tuple[str, ...] = ()         # $WANDB_TAGS (commas) are added
    wandb_artifacts: bool = False            # log the last checkpoint as a wandb artifact (type "model") at the end

    # --- pictures ---
    vis_every_epochs: int = 0                # MAE reconstructions / attention maps every N epochs (0: never)
    vis_num_images: int = 8                  # fixed held-out images in each picture
    vis_data: str | None = None              # images of the pictures (SPEC:FOLDER for a split); None: --data's test/val

    # --- evaluation ---
    monitor_every_epochs: int = 0            # online 20-NN on a small labelled split every N epochs (0: never)
    monitor_data: str | None = None          # labelled tree with train and test (else val) folders; None: --data
    monitor_train_data: str | None = None    # folder of class folders the k-NN votes with, used whole (or SPEC:FOLDER); None: monitor_data's train/
    monitor_test_data: str | None = None     # folder of class folders it is scored on, used whole; None: monitor_data's test/ (else val/)
    monitor_train_size: int = 5000           # class-balanced training images the k-NN votes with
    monitor_test_size: int = 1000            # class-balanced test images it is scored on

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed (unknown names are an error)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SslabError(unknown_fields_message(sorted(unknown), "Config.replace"))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# Fields a resumed run may change: they do not change the optimisation (what is logged or shown,
# how fast data is read, where/when checkpoints go, when to stop). Any other difference between a
# checkpoint's config and the new one stops the resume (engine/same_run.py), epochs included (it
# reshapes the lr schedule), unless --allow-config-change true. A new field that does not touch the
# optimisation belongs here.
FREE_ON_RESUME: frozenset[str] = frozenset({
    "output_dir", "resume", "allow_config_change", "num_workers", "max_steps", "nonfinite_skip_limit",
    "save_every_steps", "keep_last",
    "log_every", "progress_bar", "wandb_mode", "wandb_project", "wandb_entity", "wandb_group", "wandb_name",
    "wandb_tags", "wandb_artifacts",
    "vis_every_epochs", "vis_num_images",
    "monitor_every_epochs", "monitor_data", "monitor_train_data", "monitor_test_data", "monitor_train_size",
    "monitor_test_size", "vis_data",
    # how the same maths is executed (compiled, recomputed in the backward pass)
    "compile", "grad_checkpointing",
})
# These may change on resume as long as the effective batch (batch x accumulation x processes) stays,
# e.g. a requeue onto another GPU count with effective_batch_size set; the engine checks that product.
EFFECTIVE_BATCH_FIELDS: frozenset[str] = frozenset({"batch_size", "accum_iter", "effective_batch_size"})
def unknown_fields_message(names: list[str], where: str) -> str:
    """One line for misspelled field names, with the nearest real names."""
    fields = [f.name for f in dataclasses.fields(Config)]
    hints = [f"{n} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(n, fields, n=1)) else n for n in names]
    return (f"{where}: unknown config field(s) {', '.join(hints)}; the fields are listed by --help "
            "and in sslab/config.py")


_dataclass_init = Config.__init__


def _checked_init(self: Config, *args: Any, **kwargs: Any) -> None:
    # A misspelled keyword in a recipe's Config(...) would be a bare TypeError from the dataclass.
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise SslabError(unknown_fields_message(sorted(unknown), "Config(...)"))
    _dataclass_init(self, *args, **kwargs)


Config.__init__ = _checked_init  # type: ignore[method-assign]


def encoder_kwargs(config: "Config | dict[str, Any]") -> dict[str, Any]:
    """``timm.create_model`` keywords of a run's encoder (img_size, in_chans, patch_size, model_kwargs),
    from a Config or the config dict saved in a checkpoint."""
    c = config.to_dict() if isinstance(config, Config) else config
    kw: dict[str, Any] = dict(img_size=c["img_size"], in_chans=c["in_chans"], **c.get("model_kwargs", {}))
    if c.get("patch_size") is not None:
        kw["patch_size"] = c["patch_size"]
    return kw


def parse_args(base: Config, argv: list[str] | None = None, description: str = "") -> Config:
    """Apply command-line overrides to ``base``; ``--help`` lists every field (see :mod:`sslab.config_cli`)."""
    from .config_cli import parse_args as _parse_args

    return _parse_args(base, argv, description)
