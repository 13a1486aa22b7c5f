"""DINO branch: multi-crop views -> student (all crops) and EMA teacher (global crops) -> DINO loss.

Self-distillation with no labels (Caron et al. 2021, Alg. 1; official ``main_dino.py``). The engine
optimises the student (``model``: a :class:`~sslab.models.dino.MultiCropWrapper`, keys ``backbone.*``
and ``head.*``); this branch owns the teacher, the center (inside :class:`~sslab.losses.dino_loss.DINOLoss`)
and the per-iteration teacher momentum, and saves them in ``checkpoint["branch"]``.
"""

from __future__ import annotations

import logging
import math
from typing import Any


import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..config import Config, encoder_kwargs
from ..data.in_memory import InMemoryImages
from ..data.multicrop import MultiCropCrops, MultiCropTransform, multicrop_views
from ..data.seeding import sample_seed
from ..errors import SslabError
from ..losses.dino_loss import DINOLoss
from ..models.dino import MultiCropWrapper
from ..models.execution import (choose_attention_kernel, compile_function, compile_in_place,
                                set_grad_checkpointing)
from ..models.dino_head import DINOHead
from ..models.dino_vit import POS_INTERPOLATIONS, init_dino_vit, use_dino_pos_interpolation
from ..models.swin_geometry import is_timm_swin, validate_swin_crops
from ..models.timm_create import create_timm_model
from ..models.swin_pad_shift import use_pad_then_shift
from ..schedules import warmup_cosine

log = logging.getLogger("sslab")

# Collapse signatures (DINO paper Sec. 5.3 / Fig. 7), calibrated on tiny runs made to collapse (teacher
# temperature 0.5: uniform; no centering: one-hot) and on ViT-S/65536 at init (entropy 0.89 / 0.96 / 0.98
# of ln K and KL 0.95 / 0.34 / 0.21 nats for tau_t 0.04 / 0.07 / 0.1).
UNIFORM_ENTROPY = 0.99          # teacher entropy / ln(out_dim) above this: uniform collapse; or above
UNIFORM_ENTROPY_KL = 0.98       # this with KL(teacher || student) below UNIFORM_KL x ln(out_dim)
UNIFORM_KL = 0.01
ONE_HOT_SHARE = 0.5             # one prototype holds half the batch-mean target ...
ONE_HOT_ENTROPY = 0.25          # ... and the targets are sharp: one-hot collapse (centering lost)
EMBEDDING_STD_COLLAPSED = 0.05  # std of unit-norm embeddings x sqrt(dim): ~1 healthy (0.4-0.75 at init)
COLLAPSE_PATIENCE = 3           # consecutive checks (log rows) before warning


def build_backbone(cfg: Config, **overrides: Any) -> nn.Module:
    """The timm encoder, returning pooled embeddings (num_classes=0), accepting crops of any size.

    A ViT gets the official DINO ViT's class-token init and (``pos_interpolation="dino"``) its
    position interpolation for crops of another size (:mod:`sslab.models.dino_vit`); a Swin pads its
    stages before the cyclic shift, as EsViT (:mod:`sslab.models.swin_pad_shift`).
    """
    if cfg.pos_interpolation not in POS_INTERPOLATIONS:
        raise SslabError(f"pos_interpolation {cfg.pos_interpolation!r} is not one of {POS_INTERPOLATIONS}; pass "
                         "--pos-interpolation dino (the official DINO ViT's) or timm")
    kw = {**encoder_kwargs(cfg), **overrides}
    backbone = create_timm_model(cfg.model, pretrained=False, num_classes=0, dynamic_img_size=True, **kw)
    if isinstance(backbone, VisionTransformer):
        init_dino_vit(backbone)
        if cfg.pos_interpolation == "dino":
            use_dino_pos_interpolation(backbone)
    elif isinstance(backbone, SwinTransformer):
        use_pad_then_shift(backbone)
    return backbone


def build_dino_model(cfg: Config, teacher: bool = False) -> MultiCropWrapper:
    """Student (or, with ``teacher=True``, teacher: no drop path) = MultiCropWrapper(backbone, DINOHead)."""
    backbone = build_backbone(cfg, drop_path_rate=0.0) if teacher else build_backbone(cfg)
    head = DINOHead(backbone.num_features, cfg.out_dim, use_bn=cfg.use_bn_in_head,
                    norm_last_layer=cfg.norm_last_layer, nlayers=cfg.head_nlayers,
                    hidden_dim=cfg.head_hidden_dim, bottleneck_dim=cfg.head_bottleneck_dim)
    return MultiCropWrapper(backbone, head)


def micro_batch_seed(seed: int, epoch: int, first_index: int) -> int:
    """A seed for the random layers (drop path) of one micro-batch, keyed like the data streams."""
    return sample_seed(seed, epoch, first_index, "drop_path")


def global_crops_size(cfg: Config) -> int:
    return cfg.global_crops_size if cfg.global_crops_size is not None else cfg.img_size


def validate_dino(cfg: Config, backbone: nn.Module) -> None:
    """Reject DINO settings that cannot run, with the value and the fix."""
    if cfg.local_crops_number < 0:
        raise SslabError(f"local_crops_number must be >= 0, got {cfg.local_crops_number}")
    if not 0 <= cfg.warmup_teacher_temp_epochs <= cfg.epochs:
        raise SslabError(f"warmup_teacher_temp_epochs {cfg.warmup_teacher_temp_epochs} must be between 0 and "
                         f"epochs {cfg.epochs}; pass e.g. --warmup-teacher-temp-epochs {min(30, cfg.epochs)}")
    for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
        if getattr(cfg, name) <= 0:
            raise SslabError(f"{name} must be > 0, got {getattr(cfg, name)}")
    for name in ("momentum_teacher", "center_momentum"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise SslabError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if cfg.freeze_last_layer < 0:
        raise SslabError(f"freeze_last_layer must be >= 0 epochs, got {cfg.freeze_last_layer}")
    patch = getattr(getattr(backbone, "patch_embed", None), "patch_size", None)
    if patch is not None:
        p = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
        sizes = {"global_crops_size": global_crops_size(cfg)}
        if cfg.local_crops_number > 0:
            sizes["local_crops_size"] = cfg.local_crops_size
        for name, size in sizes.items():
            if size % p:
                raise SslabError(f"{name} {size} is not a multiple of the patch size {p}; use "
                                 f"{max(p, size // p * p)} or {(size // p + 1) * p}")
    if is_timm_swin(cfg.model):  # Swin: global crops fit its windows and merges exactly; local crops are padded
        validate_swin_crops(backbone, global_crops_size(cfg), cfg.local_crops_size if cfg.local_crops_number else None,
                            name=cfg.model)


@torch.no_grad()
def collapse_metrics(teacher_output: torch.Tensor, center: torch.Tensor, teacher_temp: float, loss: torch.Tensor,
                     embeddings: torch.Tensor) -> dict[str, float]:
    """Cheap collapse indicators of one step (DINO paper Fig. 7).

    ``teacher_output`` (2B, K) logits, ``center`` (1, K) before this step's update, ``loss`` the DINO
    loss of the same step, ``embeddings`` (N, D) backbone outputs. Since every teacher view is paired
    with the same number of student views, KL(teacher || student) = loss - mean teacher entropy exactly.
    """
    log_q = F.log_softmax((teacher_output.float() - center.float()) / teacher_temp, dim=-1)
    q = log_q.exp()
    entropy = -(q * log_q).sum(-1).mean()
    top_share = q.mean(0).max()  # mass of the most used prototype in the batch-mean target
    emb = F.normalize(embeddings.float(), dim=-1)
    emb_std = emb.std(0).mean() if len(emb) > 1 else torch.zeros((), device=emb.device)
    k, d = teacher_output.shape[-1], embeddings.shape[-1]
    entropy, top_share, emb_std, kl = (t.item() for t in (entropy, top_share, emb_std, loss.detach().float() - entropy))
    return {"teacher_entropy": entropy, "teacher_entropy_rel": entropy / math.log(k), "kl_teacher_student": kl,
            "top_prototype_share": top_share, "embedding_std": emb_std, "embedding_std_rel": emb_std * math.sqrt(d)}


def diagnose_collapse(m: dict[str, float], out_dim: int) -> str | None:
    """``"uniform"``, ``"one-hot"``, ``"representation"`` or None, from :func:`collapse_metrics`."""
    h = m["teacher_entropy_rel"]
    if h > UNIFORM_ENTROPY or (h > UNIFORM_ENTROPY_KL and m["kl_teacher_student"] < UNIFORM_KL * math.log(out_dim)):
        return "uniform"
    if m["top_prototype_share"] > ONE_HOT_SHARE and m["teacher_entropy_rel"] < ONE_HOT_ENTROPY:
        return "one-hot"
    if m["embedding_std_rel"] < EMBEDDING_STD_COLLAPSED:
        return "representation"
    return None


COLLAPSE_ADVICE = {
    "uniform": ("the teacher's targets are close to uniform (sharpening loses to centering). What usually helps: "
                "a lower teacher temperature (--teacher-temp / --warmup-teacher-temp 0.04), a longer "
                "--warmup-teacher-temp-epochs, --norm-last-layer true, a larger --freeze-last-layer, a lower lr"),
    "one-hot": ("the teacher puts its mass on one prototype for every image (centering loses to sharpening). "
                "What usually helps: keep centering on (--center-momentum 0.9; lower reacts faster), a slightly "
                "higher --teacher-temp, a lower lr, a higher --momentum-teacher (0.9995 for batches <= 256), "
                "--clip-grad 3.0"),
    "representation": ("the backbone maps every image to nearly the same embedding. What usually helps: a lower "
                       "lr or longer --warmup-epochs, a higher --momentum-teacher, --clip-grad 3.0, stronger "
                       "augmentations (more --local-crops-number, wider crop scales)"),
}


class DINOBranch:
    """DINO self-distillation (Caron et al. 2021) on a timm encoder."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.model = build_dino_model(cfg)
        validate_dino(cfg, self.model.backbone)
        self.teacher = build_dino_model(cfg, teacher=True)
        if cfg.use_bn_in_head and dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
            # official: synchronised batch norms in both networks
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)
        self.teacher.load_state_dict(self.model.state_dict())  # teacher and student start equal
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.ncrops = 2 + cfg.local_crops_number
        self.dino_loss = DINOLoss(cfg.out_dim, self.ncrops, cfg.warmup_teacher_temp, cfg.teacher_temp,
                                  cfg.warmup_teacher_temp_epochs, cfg.epochs, cfg.student_temp, cfg.center_momentum)
        set_grad_checkpointing(self.model, cfg.grad_checkpointing)  # the teacher keeps no activations anyway
        if cfg.compile:
            compile_in_place(self.model)
            compile_in_place(self.teacher)
            self.dino_loss.cross_entropy = compile_function(DINOLoss.cross_entropy)
        self.momentum_schedule: torch.Tensor | None = None
        self.last_step = 0
        self._ema_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self.collapse_streak = 0
        self.collapse_warned = False
        self.source_images: torch.Tensor | None = None  # in-memory uint8 images cropped on the device
        self.device_images: torch.Tensor | None = None

    def transform(self, source=None) -> MultiCropTransform | MultiCropCrops:
        """2 global + ``local_crops_number`` local views per image (official DataAugmentationDINO).

        With ``augment_on_device`` the loader only cuts uint8 crops and draws the photometric
        parameters (for an in-memory ``source``, only boxes: its images go to the device in
        :meth:`setup`); :meth:`views` does the rest batched on the device.
        """
        c = self.cfg
        if not c.augment_on_device:
            return MultiCropTransform(global_crops_size(c), tuple(c.global_crops_scale), c.local_crops_number,
                                      c.local_crops_size, tuple(c.local_crops_scale), c.mean, c.std)
        in_memory = isinstance(source, InMemoryImages)
        self.source_images = source.images if in_memory else None
        return MultiCropCrops(global_crops_size(c), tuple(c.global_crops_scale), c.local_crops_number,
                              c.local_crops_size, tuple(c.local_crops_scale), boxes_only=in_memory)

    def views(self, batch) -> list[torch.Tensor]:
        """The batch's 2 + K normalised views, each (B, C, S, S), on the device, whatever the data path."""
        if not self.cfg.augment_on_device:
            return batch[0]
        c = self.cfg
        return multicrop_views(batch[0], c.mean, c.std, self.device_images, batch[2], global_crops_size(c),
                               c.local_crops_size)

    def no_weight_decay(self) -> set[str]:
        """Official ``get_params_groups``: only biases and 1-D parameters skip weight decay."""
        return set()

    def setup(self, device: torch.device, steps_per_epoch: int, mixed_precision: str = "no") -> None:
        """Move teacher and loss to ``device``; teacher momentum cosine momentum_teacher -> 1 per iteration;
        the attention kernel for this device and precision (:func:`~sslab.models.execution.choose_attention_kernel`)."""
        for net in (self.model, self.teacher):
            choose_attention_kernel(net, device.type, mixed_precision)
        self.teacher.to(device)
        self.dino_loss.to(device)
        if self.source_images is not None:
            self.device_images = self.source_images.to(device)
        c = self.cfg
        self.steps_per_epoch = steps_per_epoch
        self.momentum_schedule = warmup_cosine(c.momentum_teacher, 1.0, c.epochs, steps_per_epoch)
        total = c.epochs * steps_per_epoch
        self.last_step = min(total, c.max_steps) if c.max_steps else total

    def loss(self, model: nn.Module, batch, epoch: int, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """DINO loss of one micro-batch; ``batch[0]`` holds the views (see :meth:`views`)."""
        views = self.views(batch)
        if not isinstance(views, (list, tuple)) or len(views) != self.ncrops:
            got = len(views) if isinstance(views, (list, tuple)) else "a single tensor"
            raise ValueError(f"DINO expects {self.ncrops} views per image (2 global + {self.cfg.local_crops_number} "
                             f"local), got {got}; the transform must be DINOBranch.transform()")
        seed = micro_batch_seed(self.cfg.seed, epoch, int(batch[2][0]))  # indices stay on the CPU
        with torch.no_grad():
            teacher_out, teacher_emb = self.teacher(views[:2], return_embeddings=True)  # only global views
        # Stochastic depth draws from the global generator; a generator forked and seeded by the
        # micro-batch (its epoch and first sample) makes it replay exactly on resume and differ per process.
        device = views[0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
            torch.manual_seed(seed)
            student_out = model(views)
        log_now = (step + 1) % self.cfg.log_every == 0 or step + 1 == self.last_step  # the steps that get logged
        center = self.dino_loss.center.clone() if log_now else None  # before this step's update
        with torch.autocast(device_type=device.type, enabled=False):  # the loss in fp32
            # the center moves once per optimiser step, with the teacher mean of all its micro-batches
            loss = self.dino_loss(student_out.float(), teacher_out.float(), epoch, update_center=False)

        temp = float(self.dino_loss.teacher_temp_schedule[epoch])
        metrics: dict[str, float] = {"teacher_temp": temp, "teacher_momentum": float(self.momentum_schedule[step])}
        if log_now:
            metrics.update(collapse_metrics(teacher_out, center, temp, loss, teacher_emb))
            self._watch_collapse(metrics, step)
        return loss, metrics

    def _watch_collapse(self, m: dict[str, float], step: int) -> None:
        kind = diagnose_collapse(m, self.cfg.out_dim)
        self.collapse_streak = self.collapse_streak + 1 if kind else 0
        if kind and self.collapse_streak >= COLLAPSE_PATIENCE and not self.collapse_warned:
            self.collapse_warned = True
            log.warning(
                "DINO looks COLLAPSED (%s) at step %d: teacher entropy %.3g of max ln(out_dim)=%.3g, "
                "KL(teacher||student) %.3g, top prototype share %.3g, embedding std x sqrt(dim) %.3g (~1 healthy). "
                "%s. (Warned once.)", kind, step + 1, m["teacher_entropy"], math.log(self.cfg.out_dim),
                m["kl_teacher_student"], m["top_prototype_share"], m["embedding_std_rel"], COLLAPSE_ADVICE[kind])

    def before_step(self, model: nn.Module, step: int, epoch: int) -> None:
        """Official ``cancel_gradients_last_layer``: no update of the last layer during the first epochs.

        The gradients are set to None (not zero) as in the official code, so AdamW skips the layer
        entirely (no moment update, no weight decay).
        """
        if epoch >= self.cfg.freeze_last_layer:
            return
        for name, p in extract_model_from_parallel(model).named_parameters():
            if "last_layer" in name:
                p.grad = None

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """EMA teacher: theta_t <- m * theta_t + (1 - m) * theta_s, m from the cosine schedule (Alg. 1);
        then the center's one update of this step (Eq. 4, mean over its micro-batches)."""
        self.dino_loss.apply_accumulated_center()
        if self._ema_pairs is None:
            student = extract_model_from_parallel(model)
            s_named, t_named = list(student.named_parameters()), list(self.teacher.named_parameters())
            if [n for n, _ in s_named] != [n for n, _ in t_named]:
                raise RuntimeError("student and teacher parameters differ; they must be the same architecture")
            self._ema_pairs = ([p for _, p in t_named], [p.detach() for _, p in s_named])
        m = float(self.momentum_schedule[step])
        teacher_params, student_params = self._ema_pairs
        torch._foreach_mul_(teacher_params, m)
        torch._foreach_add_(teacher_params, student_params, alpha=1 - m)

    def state_dict(self) -> dict:
        """Teacher weights (``backbone.*``, ``head.*``), the center (1, out_dim) and the collapse watch."""
        return {"teacher": self.teacher.state_dict(), "center": self.dino_loss.center.detach().clone(),
                "collapse_streak": self.collapse_streak, "collapse_warned": self.collapse_warned}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.dino_loss.center = state["center"].to(self.dino_loss.center.device, self.dino_loss.center.dtype).clone()
        self.collapse_streak = int(state.get("collapse_streak", 0))
        self.collapse_warned = bool(state.get("collapse_warned", False))
