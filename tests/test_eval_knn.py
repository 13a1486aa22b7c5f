"""Weighted k-NN: exact votes on a toy problem, and the command in one and in two processes."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from eval_helpers import write_mae_checkpoint
from sslab.eval.knn import knn_accuracy, knn_predict
from sslab.eval.knn import main as knn_main


def unit(cos):
    """A 2-D unit vector at cosine ``cos`` with (1, 0)."""
    return [cos, math.sqrt(1 - cos * cos)]


def test_votes_are_exp_similarity_over_temperature():
    # One neighbour of class 0 at cosine 0.99 outweighs two of class 1 at 0.5: exp(.99/.07) >> 2 exp(.5/.07).
    train = torch.tensor([unit(0.99), unit(0.5), [0.5, -math.sqrt(0.75)], unit(-0.9)])
    labels = torch.tensor([0, 1, 1, 2])
    test = torch.tensor([[2.0, 0.0]])  # not unit length: features are L2-normalised first
    scores = knn_predict(train, labels, test, k=3, temperature=0.07, num_classes=3)
    expected = torch.tensor([[math.exp(0.99 / 0.07), 2 * math.exp(0.5 / 0.07), 0.0]])
    assert torch.allclose(scores, expected, rtol=1e-5)
    # With a high temperature the votes are almost equal and the majority wins.
    assert knn_predict(train, labels, test, k=3, temperature=100.0).argmax().item() == 1
    # k larger than the training set is clamped: the class-2 neighbour now votes too.
    all4 = knn_predict(train, labels, test, k=200, temperature=0.07, num_classes=3)
    assert all4[0, 2].item() == pytest.approx(math.exp(-0.9 / 0.07), rel=1e-5)


def test_accuracy_on_two_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    ytr, yte = torch.arange(3).repeat(20), torch.arange(3).repeat(10)
    xtr = centres[ytr] + torch.randn(60, 3, generator=g)
    xte = centres[yte] + torch.randn(30, 3, generator=g)
    yte_wrong = yte.clone()
    yte_wrong[:3] = (yte[:3] + 1) % 3  # three deliberately wrong labels: exactly 90% right
    acc = knn_accuracy(xtr, ytr, xte, yte_wrong, ks=(1, 10, 20))
    assert all(acc[k]["top1"] == pytest.approx(90.0) for k in (1, 10, 20))
    assert all(acc[k]["top5"] == pytest.approx(100.0) for k in (10, 20))  # 3 classes: top-5 has them all
    # DINO eval_knn.py: top-5 counts the first min(5, k) classes, so at k=1 it is top-1.
    assert acc[1]["top5"] == pytest.approx(90.0)


def test_knn_command_in_one_and_two_processes(tmp_path, monkeypatch):
    ckpt = write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLAB_CACHE": str(tmp_path / "cache")}
    common = [str(ckpt), "--data", "demo", "--train-size", "200", "--test-size", "60", "--num-workers", "0",
              "--batch-size", "32", "--wandb-mode", "disabled"]
    monkeypatch.setenv("SSLAB_CACHE", env["SSLAB_CACHE"])
    knn_main([*common, "--name", "one"])
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29533", "-m", "sslab.eval.knn", *common, "--no-cache", "--name", "two"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((tmp_path / "run" / "eval" / "one.json").read_text())
    r2 = json.loads((tmp_path / "run" / "eval" / "two.json").read_text())
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert (r1["train_size"], r1["test_size"], r1["feature_dim"]) == (200, 60, 192)
    assert r1["by_k"] == r2["by_k"] and set(r1["by_k"]) == {"10", "20", "100", "200"}
    assert r1["checkpoint_fingerprint"] == r2["checkpoint_fingerprint"] and r1["top1"] == r1["by_k"]["20"]["top1"]
