"""The fast paths compute what the plain ones do: fused AdamW, foreach clipping, fused attention,
activation checkpointing, torch.compile (and bf16 + compile, the GPU path, run here on the CPU)."""

import copy

import pytest
import torch
import torch._inductor.config as inductor_config
from timm.models.vision_transformer import Attention

from conftest import make_image_folder, read_metrics, tiny_mae_config
from sslab import train
from sslab.branches.dino import build_dino_model
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.errors import SslabError
from sslab.models import execution
from sslab.models.execution import set_grad_checkpointing
from sslab.models.mae import create_mae
from sslab.models.swin_mae import create_swin_mae
from sslab.optim import adamw, clip_per_param
from test_dino_train import tiny_dino_config


def tiny_mae(**kw):
    return create_mae("vit_tiny_patch16_224", depth=2, img_size=28, patch_size=4, in_chans=1, decoder_embed_dim=32,
                      decoder_depth=2, decoder_num_heads=4, **kw)


def test_fused_adamw_takes_the_reference_step():
    torch.manual_seed(0)
    ref = tiny_mae()
    fast, start = copy.deepcopy(ref), copy.deepcopy(ref)
    opts = [adamw(m, 1e-3, 0.05, (0.9, 0.95), m.no_weight_decay(), fused=f) for m, f in ((ref, False), (fast, True))]
    assert opts[1].defaults["fused"] and not opts[0].defaults["fused"]
    for step in range(4):
        for opt in opts:
            for g in opt.param_groups:  # schedules change lr / wd every step, as in the engine
                g["lr"], g["weight_decay"] = 1e-3 * (step + 1), 0.05 * g["wd_scale"] * (1 + step)
        grads = {n: torch.randn_like(p) for n, p in ref.named_parameters() if p.requires_grad}
        for m, opt in ((ref, opts[0]), (fast, opts[1])):
            for n, p in m.named_parameters():
                if p.requires_grad:
                    p.grad = grads[n].clone()
            opt.step()
    for (n, a), b, s in zip(ref.named_parameters(), fast.parameters(), start.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), n
        assert not torch.equal(a, s) or not a.requires_grad, n  # every trained tensor moved


def test_clip_per_param_equals_the_per_tensor_loop():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((7, 3), (5,), (2, 2, 2), (4,))]
    for p, scale in zip(params, (10.0, 0.01, 1.0, 3.0)):
        p.grad = torch.randn_like(p) * scale
    params.append(torch.nn.Parameter(torch.zeros(3)))  # no gradient: left alone
    expected = []
    for p in params[:-1]:  # the official utils.clip_gradients
        coef = 3.0 / (p.grad.norm(2) + 1e-6)
        expected.append(p.grad * coef if coef < 1 else p.grad.clone())
    clip_per_param(params, 3.0)
    assert params[-1].grad is None
    for p, e in zip(params, expected):
        assert torch.allclose(p.grad, e, rtol=1e-6, atol=0)
    assert params[1].grad.norm() < 3.0 and params[0].grad.norm() == pytest.approx(3.0, rel=1e-5)


def test_attention_is_timms_fused_scaled_dot_product(tmp_path):
    attns = [m for net in (tiny_mae(), build_dino_model(tiny_dino_config(tmp_path)))
             for m in net.modules() if isinstance(m, Attention)]
    assert len(attns) == 2 + 2 + 2 and all(a.fused_attn for a in attns)  # MAE encoder + decoder, DINO


def test_attention_kernel_is_explicit_only_on_cpu_bf16_and_computes_the_same(tmp_path):
    from sslab.branches import DINOBranch, MAEBranch

    cfg = tiny_dino_config(tmp_path)
    for device, precision, fused in (("cpu", "no", True), ("cpu", "bf16", False), ("cuda", "bf16", True)):
        net = build_dino_model(cfg)
        execution.choose_attention_kernel(net, device, precision)
        assert all(m.fused_attn is fused for m in net.modules() if hasattr(m, "fused_attn"))
    # the engine's setup applies it to every network of the branch (DINO: student and teacher)
    dino = DINOBranch(cfg)
    dino.setup(torch.device("cpu"), 1, "bf16")
    mae = MAEBranch(tiny_mae_config(tmp_path))
    mae.setup(torch.device("cpu"), 1, "bf16")
    nets = (dino.model, dino.teacher, mae.model)
    assert all(not m.fused_attn for n in nets for m in n.modules() if hasattr(m, "fused_attn"))
    # the engine passes the run's precision: a bf16 run on the CPU trains with the explicit path
    seen = []

    def flags(end):
        seen.extend(m.fused_attn for m in end.model.modules() if hasattr(m, "fused_attn"))

    images = make_image_folder(tmp_path / "images")  # 24 images: one epoch of 3 steps
    train(tiny_mae_config(tmp_path / "bf16", data=str(images), img_size=16, in_chans=3, mean=(0.5,) * 3,
                          std=(0.25,) * 3, batch_size=8, epochs=1, mixed_precision="bf16"), hooks=[flags])
    assert seen and not any(seen)
    # the same attention maths: explicit and fused agree (fp32 tightly; bf16 to its rounding)
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(3, 37, 32)
    with torch.no_grad():
        fused = attn(x)
        attn.fused_attn = False
        explicit = attn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            explicit_bf16 = attn(x).float()
    assert torch.allclose(fused, explicit, atol=1e-5) and torch.allclose(fused, explicit_bf16, atol=5e-2)


def _loss_and_grads(model, run):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # drop path draws here; checkpointing must replay the same draws
    loss = run(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["mae", "swin_visible", "swin_mask_token", "dino"])
def test_grad_checkpointing_gives_equal_losses_and_grads(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "mae":
        model, x = tiny_mae(drop_path_rate=0.2), torch.randn(4, 1, 28, 28)
        run = lambda m: m(x, mask_ratio=0.75, noise=torch.rand(4, 49, generator=torch.Generator().manual_seed(0)))[0]
    elif kind.startswith("swin"):
        model = create_swin_mae("swin_tiny_patch4_window7_224", mode=kind.split("_", 1)[1], img_size=(48, 32),
                                patch_size=2, window_size=(6, 4), depths=(2, 2, 2), num_heads=(2, 2, 4), embed_dim=16,
                                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, drop_path_rate=0.2)
        x = torch.randn(2, 3, 48, 32)
        run = lambda m: m(x, mask_ratio=0.5, noise=torch.rand(2, m.num_patches, generator=torch.Generator().manual_seed(0)))[0]
    else:
        model = build_dino_model(tiny_dino_config(tmp_path))
        views = [torch.randn(3, 1, 28, 28)] * 2 + [torch.randn(3, 1, 12, 12)] * 2
        run = lambda m: m(views).logsumexp(-1).mean()
    loss_a, grads_a = _loss_and_grads(model, run)
    set_grad_checkpointing(model, True)
    loss_b, grads_b = _loss_and_grads(model, run)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], rtol=1e-5, atol=1e-7), n


def test_grad_checkpointing_is_refused_where_unsupported():
    with pytest.raises(SslabError, match="grad-checkpointing false"):
        set_grad_checkpointing(torch.nn.Linear(2, 2), True)


def test_compiled_training_matches_eager_and_resumes_exactly(tmp_path):
    # Inductor draws its own random numbers unless told to fall back to torch's: with the fallback,
    # drop path is the same in both and the losses may differ only by kernel rounding.
    common = dict(epochs=1, max_steps=4, batch_size=8, log_every=1, save_every_steps=2, keep_last=5,
                  model_kwargs={"depth": 2, "drop_path_rate": 0.1})
    with inductor_config.patch(fallback_random=True):
        eager = tiny_mae_config(tmp_path / "eager", **common)
        train(eager)
        full = tiny_mae_config(tmp_path / "full", **common, compile=True)
        train(full)
        part = tiny_mae_config(tmp_path / "part", **{**common, "max_steps": 2}, compile=True)
        train(part)
        train(part.replace(max_steps=4, resume="auto"))
    e, a, b = (read_metrics(c.output_dir) for c in (eager, full, part))
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in e], rel=1e-4)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact resume, compiled
    wa = load_checkpoint(list_checkpoints(full.output_dir)[-1])["model"]
    wb = load_checkpoint(list_checkpoints(part.output_dir)[-1])["model"]
    assert set(wa) == set(load_checkpoint(list_checkpoints(eager.output_dir)[-1])["model"])  # same keys
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dino_gpu_path_on_cpu_bf16_compiled_matches_eager(tmp_path, monkeypatch):
    # The GPU settings (bf16 autocast, compile, fused AdamW, checkpointing) run on the CPU and give
    # the eager bf16 run's losses up to bf16 rounding. The graphs (student with checkpointed blocks
    # at two crop sizes, teacher, loss) are traced by dynamo and AOTAutograd as inductor would get
    # them; generating the kernels (minutes on 2 cores) is left to the MAE test above.
    monkeypatch.setattr(execution, "COMPILE_BACKEND", "aot_eager")
    common = dict(max_steps=2, batch_size=8, mixed_precision="bf16", grad_checkpointing=True,
                  model_kwargs={"depth": 2, "drop_path_rate": 0.0})
    eager = tiny_dino_config(tmp_path / "eager", **common)
    train(eager)
    fast = tiny_dino_config(tmp_path / "compiled", **common, compile=True)
    train(fast)
    e, c = read_metrics(eager.output_dir), read_metrics(fast.output_dir)
    assert len(c) == 2 and [r["loss"] for r in c] == pytest.approx([r["loss"] for r in e], rel=2e-2)
