"""Training-step speed: sslab's step against a plain PyTorch/timm step of the same maths, side by side.

    python benchmarks/step_speed.py --method mae  [--batch-size 8] [--steps 5] [--device cuda] [--no-compile] [--precision bf16]
    python benchmarks/step_speed.py --method dino [--batch-size 8] [--local-crops 10] [--out-dim 65536]

The plain step is the official recipe written out straightforwardly for this benchmark (no code from
the official repositories): MAE ViT-B/16 (224 px, 75% masking, decoder 512 x 8, normalised-pixel
loss) or DINO ViT-S/16 (2 x 224 + 10 x 96 crops, 65536 prototypes, EMA teacher, per-tensor clip 3.0),
timm modules at their defaults (attention already through F.scaled_dot_product_attention), the DINO
loss with one log-softmax per (teacher, student) pair, the per-tensor ``if coef < 1`` clip and EMA
loops, ``torch.optim.AdamW`` with torch's default implementation, and ``loss.item()`` every step.
sslab's step is the engine's: the branch's loss (compiled with ``--compile``, the default here), the
loss check and gradient norm in one sync (``NonFiniteGuard``), foreach clipping, fused AdamW and the
foreach EMA.

Both start from the same weights and see the same synthetic batch; the first step's losses are
printed as a check. After warm-up (compilation included) the two steps alternate, so that the
load of a shared machine hits both alike; the ratio is of the medians. FLOPs (matmuls and
attention, 1 multiply-add = 2) are counted on a plain step, and the matmul peak of this device is
measured in the same run (square matmuls in the step's precision) to give the fraction of it
each step achieves (model FLOPs utilisation). On the CPU one plain step is also profiled: the share
of its time in matmul and attention kernels bounds what fusing the rest can gain (printed as the
ceiling; a faster attention kernel, as sslab picks on the CPU under bf16, goes beyond it).
``--precision bf16`` (the default on CUDA) runs both under bf16 autocast, the official recipes'
mixed precision (they use fp16 AMP on GPUs); this CPU has bf16 matmul instructions (avx512_bf16),
so the setting is meaningful here too.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from functools import partial

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sslab.branches.dino import DINOBranch
from sslab.branches.mae import MAEBranch
from sslab.config import Config
from sslab.engine.nonfinite import NonFiniteGuard
from sslab.models.pos_embed import sincos_2d
from sslab.optim import clip_per_param

from mae_throughput import device_name  # benchmarks/ is on sys.path when a benchmark runs as a script

# ----------------------------------------------------------------------------------------------
# The plain MAE (He et al. 2021): written out for this benchmark, official key names
# ----------------------------------------------------------------------------------------------


class PlainMAE(nn.Module):
    """ViT encoder on the visible 25% of patches, 8-block 512-d decoder, normalised-pixel MSE on removed patches."""

    def __init__(self, encoder: str = "vit_base_patch16_224", dec_dim: int = 512, dec_depth: int = 8, dec_heads: int = 16):
        super().__init__()
        vit = timm.create_model(encoder, pretrained=False, num_classes=0)
        self.patch_embed, self.cls_token, self.blocks, self.norm = vit.patch_embed, vit.cls_token, vit.blocks, vit.norm
        self.p = vit.patch_embed.patch_size[0]
        d = vit.embed_dim
        g = vit.patch_embed.grid_size
        self.pos_embed = nn.Parameter(sincos_2d(d, g, cls_token=True)[None], requires_grad=False)
        self.decoder_embed = nn.Linear(d, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_2d(dec_dim, g, cls_token=True)[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList(Block(dec_dim, dec_heads, 4.0, qkv_bias=True,
                                                  norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(dec_depth))
        self.decoder_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dec_dim, self.p * self.p * 3)

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor, mask_ratio: float = 0.75) -> torch.Tensor:
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        n, L, d = x.shape
        keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones(n, L, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1)
        x = self.norm(self.blocks(torch.cat([cls, x], dim=1)))
        x = self.decoder_embed(x)
        tokens = torch.cat([x[:, 1:], self.mask_token.repeat(n, L + 1 - x.shape[1], 1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        h = imgs.shape[2] // self.p
        target = imgs.reshape(n, 3, h, self.p, h, self.p).permute(0, 2, 4, 3, 5, 1).reshape(n, h * h, -1)
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


# ----------------------------------------------------------------------------------------------
# The plain DINO (Caron et al. 2021): written out for this benchmark, same key names as sslab's
# ----------------------------------------------------------------------------------------------


class PlainHeadLastLayer(nn.Module):
    def __init__(self, d: int, k: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.randn(k, d) / d ** 0.5)
        self.weight_g = nn.Parameter(torch.ones(k, 1), requires_grad=False)  # norm_last_layer

    def forward(self, x):
        return F.linear(x, self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True))


class PlainDINO(nn.Module):
    """timm ViT (pooled class token) + 3-layer MLP head + L2 norm + weight-normalised prototypes."""

    def __init__(self, model: str, out_dim: int, drop_path: float):
        super().__init__()
        self.backbone = timm.create_model(model, pretrained=False, num_classes=0, dynamic_img_size=True,
                                          drop_path_rate=drop_path)
        d = self.backbone.num_features
        head = nn.Module()
        head.mlp = nn.Sequential(nn.Linear(d, 2048), nn.GELU(), nn.Linear(2048, 2048), nn.GELU(), nn.Linear(2048, 256))
        head.last_layer = PlainHeadLastLayer(256, out_dim)
        self.head = head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        sizes = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0)
        start, outs = 0, []
        for end in ends.tolist():
            outs.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        x = F.normalize(self.head.mlp(torch.cat(outs)), dim=-1)
        return self.head.last_layer(x)


def plain_dino_loss(student, teacher, center, ncrops, teacher_temp=0.04, student_temp=0.1, momentum=0.9):
    """The paper's loss as a straightforward loop; returns (loss, new center)."""
    s = (student / student_temp).chunk(ncrops)
    t = F.softmax((teacher - center) / teacher_temp, dim=-1).detach().chunk(2)
    total, n = 0.0, 0
    for iq, q in enumerate(t):
        for v in range(ncrops):
            if v != iq:
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
    with torch.no_grad():
        new_center = center * momentum + teacher.mean(0, keepdim=True) * (1 - momentum)
    return total / n, new_center


def plain_groups(model: nn.Module, wd: float, skip: set[str] = frozenset()) -> list[dict]:
    decay, no = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------------------
# The two steps
# ----------------------------------------------------------------------------------------------


def engine_step(branch, model, batch, params, optimizer, autocast, device, clip_per_tensor: float = 0.0):
    """sslab's step as the engine runs it: the branch's loss, the loss and gradient-norm check in one
    sync (``NonFiniteGuard``), DINO's per-tensor clip, the branch's before/after-step hooks, fused AdamW."""
    guard = NonFiniteGuard(0, False, device)

    def step():
        with autocast():
            loss, _ = branch.loss(model, batch, 1, 0)
        guard.watch(loss).backward()
        _, ok, why = guard.clip_and_check(params, float("inf"))
        if not ok:
            raise FloatingPointError(why)
        if clip_per_tensor:
            clip_per_param(params, clip_per_tensor)
        branch.before_step(model, 0, 1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        branch.after_step(model, 0)
        return loss
    return step


def build(args, device):
    """Returns (plain_step, sslab_step, description, batch size); each call is one optimiser step."""
    amp = args.precision == "bf16"
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=amp)
    b = args.batch_size
    index = torch.arange(b)
    if args.method == "mae":
        cfg = Config(method="mae", model="vit_base_patch16_224", img_size=224, batch_size=b, compile=args.compile,
                     grad_checkpointing=args.grad_checkpointing, mixed_precision="bf16" if amp else "no",
                     augment_on_device=False)  # the step takes ready views, as the plain one
        torch.manual_seed(0)
        branch = MAEBranch(cfg)
        branch.setup(device, 1000, cfg.mixed_precision)  # as the engine: also picks the attention kernel
        ours = branch.model.to(device).train()
        plain = PlainMAE().to(device).train()
        plain.load_state_dict(ours.state_dict())
        imgs = torch.randn(b, 3, 224, 224, device=device)
        noise = torch.rand(b, 196, device=device)
        opt_p = torch.optim.AdamW(plain_groups(plain, 0.05, {"cls_token", "mask_token"}), lr=1e-4, betas=(0.9, 0.95))
        opt_o = torch.optim.AdamW(plain_groups(ours, 0.05, {"cls_token", "mask_token"}), lr=1e-4, betas=(0.9, 0.95),
                                  fused=True)
        params_o = [p for p in ours.parameters() if p.requires_grad]
        from sslab.data.seeding import sample_uniform
        noise = sample_uniform(0, 1, index, 196, "mask").to(device)  # the mask the branch draws for these samples

        def plain_step(backward=True):
            with autocast():
                loss = plain(imgs, noise)
            if not math.isfinite(loss.item()):  # the official engine checks every step
                raise FloatingPointError(loss.item())
            if backward:
                loss.backward()
                opt_p.step()
                opt_p.zero_grad(set_to_none=True)
            return loss

        ours_step = engine_step(branch, ours, [imgs, None, index, None], params_o, opt_o, autocast, device)

        desc = f"MAE ViT-B/16, 224 px, mask 0.75, decoder 512x8, batch {b}"
        return plain_step, ours_step, desc, b

    cfg = Config(method="dino", model="vit_small_patch16_224", img_size=224, batch_size=b, out_dim=args.out_dim,
                 local_crops_number=args.local_crops, local_crops_size=96, model_kwargs={"drop_path_rate": 0.1},
                 epochs=100, warmup_teacher_temp_epochs=30, clip_grad=3.0, clip_grad_mode="per_param",
                 compile=args.compile, grad_checkpointing=args.grad_checkpointing, log_every=10**9,
                 mixed_precision="bf16" if amp else "no", betas=(0.9, 0.999), weight_decay=0.04,
                 augment_on_device=False)
    torch.manual_seed(0)
    branch = DINOBranch(cfg)
    branch.setup(device, 1000, cfg.mixed_precision)  # as the engine: also picks the attention kernel
    ours = branch.model.to(device).train()
    plain, plain_teacher = PlainDINO(cfg.model, cfg.out_dim, 0.1), PlainDINO(cfg.model, cfg.out_dim, 0.0)
    plain.load_state_dict(ours.state_dict())
    plain_teacher.load_state_dict(ours.state_dict())
    plain, plain_teacher = plain.to(device).train(), plain_teacher.to(device).train()
    for p in plain_teacher.parameters():
        p.requires_grad = False
    center = torch.zeros(1, cfg.out_dim, device=device)
    ncrops = 2 + args.local_crops
    views = [torch.randn(b, 3, 224, 224, device=device) for _ in range(2)]
    views += [torch.randn(b, 3, 96, 96, device=device) for _ in range(args.local_crops)]
    opt_p = torch.optim.AdamW(plain_groups(plain, 0.04), lr=1e-4)
    opt_o = torch.optim.AdamW(plain_groups(ours, 0.04), lr=1e-4, fused=True)
    params_o = [p for p in ours.parameters() if p.requires_grad]
    pairs_p = list(zip(plain_teacher.parameters(), plain.parameters()))

    def plain_step(backward=True):
        nonlocal center
        with autocast():
            t_out = plain_teacher(views[:2])
            s_out = plain(views)
            loss, new_center = plain_dino_loss(s_out.float(), t_out.float(), center, ncrops,
                                               float(branch.dino_loss.teacher_temp_schedule[1]))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(loss.item())
        if not backward:
            return loss
        center = new_center
        loss.backward()
        for p in plain.parameters():  # per-tensor clip, one test per tensor
            if p.grad is not None:
                coef = 3.0 / (p.grad.norm(2) + 1e-6)
                if coef < 1:
                    p.grad.mul_(coef)
        opt_p.step()
        opt_p.zero_grad(set_to_none=True)
        with torch.no_grad():
            for pt, ps in pairs_p:
                pt.mul_(0.996).add_((1 - 0.996) * ps.detach())
        return loss

    ours_step = engine_step(branch, ours, [views, None, index, None], params_o, opt_o, autocast, device,
                            clip_per_tensor=3.0)

    desc = f"DINO ViT-S/16, 2x224 + {args.local_crops}x96 crops, {cfg.out_dim} prototypes, batch {b}"
    return plain_step, ours_step, desc, b


DENSE_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul")


def dense_share(step) -> float:
    """Share of one step's operator time spent in matmuls and attention kernels (torch profiler, self time).

    With these kernels unchanged, nothing else can make the step faster than 1 / share: the Amdahl
    ceiling of fusion, fused optimisers and fewer syncs.
    """
    from torch.profiler import profile
    with profile() as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    dense = sum(e.self_cpu_time_total for e in events
                if e.key in DENSE_OPS or "scaled_dot_product" in e.key or "attention" in e.key)
    return dense / total


def matmul_peak(device: torch.device, n: int, dtype: torch.dtype) -> float:
    """FLOP/s of one n x n x n matmul (best of 3 after a warm-up)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for i in range(4):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i:
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["mae", "dino"], required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps of each (alternating)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each after the first (compiling) one")
    p.add_argument("--local-crops", type=int, default=10)
    p.add_argument("--out-dim", type=int, default=65536)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="sslab's step without torch.compile")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="both steps in fp32 or under bf16 autocast (default: bf16 on CUDA, fp32 on CPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    plain_step, ours_step, desc, b = build(args, device)

    first_plain = plain_step(backward=False).item()  # same weights, same batch: the losses agree
    t0 = time.perf_counter()
    first_ours = ours_step().item()
    sync(device)
    first_time = time.perf_counter() - t0
    counter = FlopCounterMode(display=False)
    with counter:
        plain_step()
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        plain_step(), ours_step()
    share = dense_share(plain_step) if device.type == "cpu" else None  # CUDA kernels run asynchronously
    peak_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    n = 8192 if device.type == "cuda" else 2048
    times = {"plain": [], "sslab": []}
    peaks = []
    for _ in range(args.steps):
        peaks.append(matmul_peak(device, n, peak_dtype))
        for name, step in (("plain", plain_step), ("sslab", ours_step)):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    peak = max(peaks)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device        {device_name(device)} (torch {torch.__version__}), "
          f"{'bf16 autocast' if args.precision == 'bf16' else 'fp32'}")
    print(f"setting       {desc}")
    print(f"sslab options compile {args.compile}, grad_checkpointing {args.grad_checkpointing}, fused AdamW; "
          f"first sslab step (compiling) {first_time:.1f} s")
    print(f"first loss    plain {first_plain:.6f}  sslab {first_ours:.6f}")
    print(f"FLOPs/step    {flops / 1e9:.1f} GFLOP (fwd+bwd, counted on the plain step)")
    print(f"matmul peak   {peak / 1e12:.3f} TFLOP/s ({n}^3 {str(peak_dtype).removeprefix('torch.')}, best of the run)")
    for k in ("plain", "sslab"):
        achieved = flops / med[k]
        print(f"{k:<13} median {med[k] * 1e3:8.1f} ms/step over {args.steps} ({', '.join(f'{t:.2f}' for t in times[k])} s)"
              f"  {b / med[k]:7.2f} img/s  {achieved / 1e12:.3f} TFLOP/s = {achieved / peak:.1%} of the matmul peak (MFU)")
    pairwise = statistics.median(p / o for p, o in zip(times["plain"], times["sslab"]))
    print(f"speed-up      {med['plain'] / med['sslab']:.2f}x sslab over plain (ratio of medians; "
          f"median of per-pair ratios {pairwise:.2f}x)")
    if share is not None:
        print(f"ceiling       matmuls + attention are {share:.1%} of the plain step's operator time (profiled once): "
              f"removing all the rest (what fusion, a fused optimiser and fewer syncs act on) gives at most "
              f"{1 / share:.2f}x; beyond that only faster matmul or attention kernels")


if __name__ == "__main__":
    main()
