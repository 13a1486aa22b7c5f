"""Data parallelism on CPU: 2 processes under torchrun (gloo) equal 1 process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accelerate.utils import set_seed

from conftest import read_metrics, tiny_mae_config
from sslab.branches import MAEBranch
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.engine.distributed import check_world

WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def run(args, env_extra=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def without_key_bias(name, t):
    """Drop the key third of a qkv bias: softmax is shift-invariant, so its true gradient is exactly 0 and
    Adam turns the rounding noise there into +-lr steps that differ between any two summation orders."""
    if name.endswith("attn.qkv.bias"):
        d = t.shape[0] // 3
        return torch.cat([t[:d], t[2 * d:]])
    return t


def test_two_processes_equal_one_process_on_the_union_batch(tmp_path):
    one = run([sys.executable, WORKER, "--output-dir", str(tmp_path / "one"), "--batch-size", "16"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               WORKER, "--output-dir", str(tmp_path / "two"), "--batch-size", "8"])
    assert two.returncode == 0, two.stderr[-3000:]
    cfg = (tmp_path / "two" / "config.json").read_text()
    assert '"world_size": 2' in cfg and '"effective_batch": 16' in cfg
    la, lb = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for a, b in zip(la, lb):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["lr"] == b["lr"]
    wa = load_checkpoint(list_checkpoints(tmp_path / "one")[-1])["model"]
    wb = load_checkpoint(list_checkpoints(tmp_path / "two")[-1])["model"]
    diffs = {k: (without_key_bias(k, wa[k]) - without_key_bias(k, wb[k])).abs().max().item() for k in wa}
    assert max(diffs.values()) < 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    # and the steps really moved the weights away from the shared initialisation
    set_seed(0)
    w0 = MAEBranch(tiny_mae_config(tmp_path)).model.state_dict()
    assert max((wa[k] - w0[k]).abs().max().item() for k in wa) > 1e-3  # lr 1.6e-3 per step


def test_world_size_mismatch_stops_with_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="WORLD_SIZE=2 .* 1 process"):
        check_world(2, 1, "DistributedType.NO")
    check_world(2, 2, "DistributedType.MULTI_CPU")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="4 SLURM tasks without a distributed launcher"):
        check_world(1, 1, "DistributedType.NO")
