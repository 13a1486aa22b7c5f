"""DINO branch pieces: teacher EMA and its schedule, last-layer freeze, multi-crop views, collapse watch."""

import logging
import math

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from sslab import Config
from sslab.branches.dino import DINOBranch, collapse_metrics, diagnose_collapse
from sslab.data.multicrop import MultiCropTransform
from sslab.data.seeding import sample_seed


def tiny_cfg(**changes) -> Config:
    base = Config(method="dino", model="vit_tiny_patch16_224", model_kwargs={"depth": 2}, img_size=28, patch_size=4,
                  in_chans=1, mean=(0.286,), std=(0.353,), out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
                  local_crops_number=2, local_crops_size=12, epochs=4, warmup_teacher_temp_epochs=1, log_every=1)
    return base.replace(**changes)


def test_teacher_is_an_ema_of_the_student_with_a_cosine_momentum():
    branch = DINOBranch(tiny_cfg(momentum_teacher=0.99))
    branch.setup(torch.device("cpu"), steps_per_epoch=5)
    m = branch.momentum_schedule
    assert len(m) == 20 and m[0] == pytest.approx(0.99) and m[-1] < 1 and m[-1] == pytest.approx(1.0, abs=1e-4)
    assert m[10] == pytest.approx(1 - 0.01 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))  # official cosine_scheduler
    assert all(not p.requires_grad for p in branch.teacher.parameters())
    s0, t0 = branch.model.state_dict(), {k: v.clone() for k, v in branch.teacher.state_dict().items()}
    assert all(torch.equal(s0[k], t0[k]) for k in t0)  # start equal
    with torch.no_grad():
        for p in branch.model.parameters():
            p.add_(torch.randn_like(p))
    student = {k: v.clone() for k, v in branch.model.state_dict().items()}
    branch.after_step(branch.model, step=10)
    for k, t in branch.teacher.state_dict().items():
        assert torch.allclose(t, m[10].item() * t0[k] + (1 - m[10].item()) * student[k], atol=1e-6), k


def test_last_layer_gets_no_update_during_the_first_epochs():
    branch = DINOBranch(tiny_cfg(freeze_last_layer=1, norm_last_layer=False))
    for p in branch.model.parameters():
        p.grad = torch.ones_like(p)
    branch.before_step(branch.model, step=3, epoch=0)
    frozen = {n for n, p in branch.model.named_parameters() if p.grad is None}
    assert frozen == {"head.last_layer.weight_g", "head.last_layer.weight_v"}
    for p in branch.model.parameters():
        p.grad = torch.ones_like(p)
    branch.before_step(branch.model, step=30, epoch=1)
    assert all(p.grad is not None for p in branch.model.parameters())


def test_state_dict_round_trips_teacher_and_center():
    a, b = DINOBranch(tiny_cfg()), DINOBranch(tiny_cfg(seed=1))
    with torch.no_grad():
        for p in a.teacher.parameters():
            p.add_(1.0)
    a.dino_loss.center = torch.randn(1, 64)
    state = a.state_dict()
    assert set(state) >= {"teacher", "center"} and state["center"].shape == (1, 64)
    assert all(k.startswith(("backbone.", "head.")) for k in state["teacher"])
    b.load_state_dict(state)
    assert torch.equal(b.dino_loss.center, a.dino_loss.center)
    assert all(torch.equal(v, a.teacher.state_dict()[k]) for k, v in b.teacher.state_dict().items())


def seeded(transform, img, key):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(0, 0, key))
        return transform(img)


@pytest.mark.parametrize("channels", [1, 3])
def test_multicrop_views_sizes_and_per_sample_determinism(channels):
    t = MultiCropTransform(28, (0.4, 1.0), 3, 12, (0.05, 0.4), mean=[0.5] * channels, std=[0.25] * channels)
    img = torch.randint(0, 256, (channels, 28, 28), dtype=torch.uint8)
    views = seeded(t, img, 7)
    assert [tuple(v.shape) for v in views] == [(channels, 28, 28)] * 2 + [(channels, 12, 12)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    again, other = seeded(t, img, 7), seeded(t, img, 8)
    assert all(torch.equal(x, y) for x, y in zip(views, again))
    assert not torch.equal(views[0], other[0])
    pil = Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy())
    assert all(torch.allclose(x, y, atol=0.05) for x, y in zip(seeded(t, pil, 7), views))


def test_multicrop_per_view_augmentations_are_the_papers():
    t = MultiCropTransform(224, (0.4, 1.0), 2, 96, (0.05, 0.4))

    def find(compose, name):
        out = []
        for tr in compose.transforms:
            inner = tr.transforms if type(tr).__name__ == "RandomApply" else [tr]
            out += [(tr, i) for i in inner if type(i).__name__ == name]
        return out

    blur = [find(c, "GaussianBlur") for c in (t.global_transfo1, t.global_transfo2, t.local_transfo)]
    assert [b[0][0].p for b in blur] == [1.0, 0.1, 0.5]
    assert all(b[0][1].sigma == [0.1, 2.0] for b in blur)
    assert [len(find(c, "RandomSolarize")) for c in (t.global_transfo1, t.global_transfo2, t.local_transfo)] == [0, 1, 0]
    assert find(t.global_transfo2, "RandomSolarize")[0][1].p == 0.2
    jitter_apply, jitter = find(t.local_transfo, "ColorJitter")[0]
    assert jitter_apply.p == 0.8 and (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (
        (0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))
    assert find(t.local_transfo, "RandomGrayscale")[0][1].p == 0.2
    crops = [find(c, "RandomResizedCrop")[0][1] for c in (t.global_transfo1, t.local_transfo)]
    assert [(c.size, c.scale) for c in crops] == [((224, 224), (0.4, 1.0)), ((96, 96), (0.05, 0.4))]
    # the first global view is always blurred: it differs from the same pipeline without the blur
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    small = MultiCropTransform(32, (0.4, 1.0), 0, 16)
    unblurred = v2.Compose([tr for tr in small.global_transfo1.transforms if not find(v2.Compose([tr]), "GaussianBlur")])
    assert len(unblurred.transforms) == len(small.global_transfo1.transforms) - 1
    differ = [not torch.allclose(seeded(small, img, k)[0], seeded(unblurred, img, k), atol=1e-3) for k in range(20)]
    assert sum(differ) >= 16  # p = 1; sigma near 0.1 can vanish in uint8 rounding


def metrics_for(teacher, student_loss, emb):
    return collapse_metrics(teacher, torch.zeros(1, teacher.shape[1]), 0.04, torch.tensor(student_loss), emb)


def test_collapse_metrics_and_diagnosis():
    torch.manual_seed(0)
    k, d = 512, 64
    healthy_emb = torch.randn(32, d)
    # healthy: sharp, varied targets; the student is not the teacher yet
    m = metrics_for(torch.randn(32, k), 6.0, healthy_emb)
    assert 0 < m["teacher_entropy"] < math.log(k) and m["kl_teacher_student"] > 0.1
    assert m["embedding_std_rel"] == pytest.approx(1.0, abs=0.15)  # ~1/sqrt(dim) per coordinate
    assert diagnose_collapse(m, k) is None
    # uniform: flat teacher logits -> entropy ln K; a uniform student -> loss ln K -> KL 0
    m = metrics_for(torch.zeros(32, k), math.log(k), healthy_emb)
    assert m["teacher_entropy_rel"] == pytest.approx(1.0) and abs(m["kl_teacher_student"]) < 1e-4
    assert diagnose_collapse(m, k) == "uniform"
    # nearly uniform targets are collapse once the student has caught up (KL ~ 0), not before
    near = {"teacher_entropy_rel": 0.985, "top_prototype_share": 0.01, "embedding_std_rel": 1.0}
    assert diagnose_collapse({**near, "kl_teacher_student": 0.5}, k) is None
    assert diagnose_collapse({**near, "kl_teacher_student": 0.01}, k) == "uniform"
    # one-hot: every image on prototype 3; the student agrees (loss = entropy ~ 0)
    onehot = torch.zeros(32, k)
    onehot[:, 3] = 10.0
    m = metrics_for(onehot, 0.0, healthy_emb)
    assert m["top_prototype_share"] > 0.99 and diagnose_collapse(m, k) == "one-hot"
    # representation: one embedding for every image
    m = metrics_for(torch.randn(32, k), 6.0, torch.randn(1, d).expand(32, d))
    assert m["embedding_std"] < 1e-6 and diagnose_collapse(m, k) == "representation"


def test_collapse_warning_is_logged_once_after_patience(caplog):
    branch = DINOBranch(tiny_cfg())
    collapsed = {"kl_teacher_student": 0.0, "teacher_entropy_rel": 1.0, "teacher_entropy": math.log(64),
                 "top_prototype_share": 1 / 64, "embedding_std_rel": 1.0}
    with caplog.at_level(logging.WARNING, logger="sslab"):
        branch._watch_collapse({**collapsed, "teacher_entropy_rel": 0.5}, 0)  # healthy check: no streak
        for step in range(1, 8):
            branch._watch_collapse(collapsed, step)
    warnings = [r for r in caplog.records if "COLLAPSED" in r.getMessage()]
    assert len(warnings) == 1 and "uniform" in warnings[0].getMessage() and "teacher-temp" in warnings[0].getMessage()
    assert "step 4" in warnings[0].getMessage()  # 3 consecutive collapsed checks: steps 1, 2, 3
    assert branch.state_dict()["collapse_warned"] is True
