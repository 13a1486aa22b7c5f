"""DINOLoss: the official signature, the loss against a direct computation, the tau_t schedule, the center."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import sslab.losses.dino_loss as dino_loss_module
from sslab import DINOLoss


def direct_dino_loss(student, teacher, center, tau_s, tau_t, ncrops):
    """Eq. 1-3 of the paper written out sample by sample in float64 with math.exp / math.log."""
    s, t, c = student.double().numpy(), teacher.double().numpy(), center.double().numpy()[0]
    b = len(t) // 2
    total, pairs = 0.0, 0
    for iq in range(2):
        for v in range(ncrops):
            if v == iq:
                continue
            per_sample = []
            for i in range(b):
                tz = (t[iq * b + i] - c) / tau_t
                p_t = np.exp(tz - tz.max()) / np.exp(tz - tz.max()).sum()
                sz = s[v * b + i] / tau_s
                log_p_s = sz - (sz.max() + math.log(np.exp(sz - sz.max()).sum()))
                per_sample.append(-(p_t * log_p_s).sum())
            total += sum(per_sample) / b
            pairs += 1
    return total / pairs


def test_loss_matches_direct_computation_and_center_moves():
    torch.manual_seed(0)
    out_dim, ncrops, b = 7, 4, 3
    loss_fn = DINOLoss(out_dim, ncrops, 0.04, 0.07, 3, 5)  # official positional signature
    loss_fn.center = torch.randn(1, out_dim) * 0.1
    student, teacher = torch.randn(ncrops * b, out_dim), torch.randn(2 * b, out_dim)
    center_before = loss_fn.center.clone()
    for epoch, tau_t in [(1, 0.055), (4, 0.07)]:
        loss_fn.center = center_before.clone()
        loss = loss_fn(student, teacher, epoch)
        expected = direct_dino_loss(student, teacher, center_before, 0.1, tau_t, ncrops)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        # center <- 0.9 center + 0.1 batch mean of the teacher outputs
        assert torch.allclose(loss_fn.center, 0.9 * center_before + 0.1 * teacher.mean(0, keepdim=True), atol=1e-6)
    assert "center" in loss_fn.state_dict() and loss_fn.state_dict()["center"].shape == (1, out_dim)


def test_loss_gradient_reaches_only_the_student():
    loss_fn = DINOLoss(5, 3, 0.04, 0.04, 0, 2)
    student = torch.randn(6, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    loss_fn(student, teacher, 0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_teacher_temperature_warms_up_per_epoch_then_stays():
    sched = DINOLoss(4, 2, 0.04, 0.07, 30, 100).teacher_temp_schedule
    assert len(sched) == 100
    assert sched[0] == pytest.approx(0.04) and sched[29] == pytest.approx(0.07)  # np.linspace end point
    assert sched[15] == pytest.approx(0.04 + 15 * 0.03 / 29)
    assert np.all(sched[29:] == pytest.approx(0.07))
    assert np.all(DINOLoss(4, 2, 0.04, 0.07, 0, 3).teacher_temp_schedule == pytest.approx(0.07))
    with pytest.raises(ValueError, match="warmup_teacher_temp_epochs 30"):
        DINOLoss(4, 2, 0.04, 0.07, 30, 10)


WORKER = textwrap.dedent("""
    import importlib.util, sys, torch, torch.distributed as dist
    # the loss module alone (torch + numpy): importing all of sslab in two processes costs seconds
    spec = importlib.util.spec_from_file_location("dino_loss", sys.argv[2])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    DINOLoss = module.DINOLoss
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    teacher = [torch.randn(8, 6) for _ in range(3)]   # 3 steps, global batch of 2 x 4 images
    student = [torch.randn(12, 6) for _ in range(3)]  # 3 crops
    loss_fn = DINOLoss(6, 3, 0.04, 0.04, 0, 1)

    def shard(x, n_views):  # this rank's images of every view, views stay crop-major
        return torch.cat([v.chunk(world)[rank] for v in x.chunk(n_views)])

    for t, s in zip(teacher, student):
        loss_fn(shard(s, 3), shard(t, 2), 0)
    if rank == 0:
        torch.save(loss_fn.center, sys.argv[1])
    dist.destroy_process_group()
""")


def test_center_over_two_processes_equals_one_process_on_the_union_batch(tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "center.pt"
    script.write_text(WORKER)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", str(script), str(out), dino_loss_module.__file__], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.manual_seed(0)
    teacher = [torch.randn(8, 6) for _ in range(3)]
    student = [torch.randn(12, 6) for _ in range(3)]
    single = DINOLoss(6, 3, 0.04, 0.04, 0, 1)
    for t, s in zip(teacher, student):
        single(s, t, 0)
    assert torch.allclose(torch.load(out), single.center, atol=1e-6)
    assert single.center.abs().sum() > 0
