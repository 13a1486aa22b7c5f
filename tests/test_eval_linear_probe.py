"""Linear probes: many heads at once, selection on held-out data, LARS, and both commands end to end."""

import json

import pytest
import torch

from eval_helpers import write_mae_checkpoint
from sslab.eval.lars import LARS
from sslab.eval.linear_probe import main as probe_main
from sslab.eval.linear_probe import probe_cached_features, train_heads


def separable(n, d=16, classes=4, seed=0):
    """Gaussian features labelled by a random linear map: linearly separable by construction."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, d, generator=g) * 3 + 1.0  # off-centre and scaled: the BN has work to do
    return x, (x @ w).argmax(1)


def test_probe_recovers_a_linearly_separable_labelling():
    xtr, ytr = separable(1500)
    xte, yte = separable(400, seed=1)
    out = probe_cached_features(xtr, ytr, xte, yte, lrs=(0.01, 0.1, 1.0), wds=(0.0, 1e-3), epochs=30, batch_size=128)
    assert out["top1"] >= 95.0, out["best"]
    assert len(out["grid"]) == 6 and out["fit_size"] + out["held_out_size"] == 1500
    best = max(out["grid"], key=lambda g: (g["val_top1"], -g["val_loss"]))
    assert out["best"] == best and out["val_top1"] == best["val_top1"]
    # Shuffled labels carry nothing a linear map could find: the same probe drops to about the majority class.
    perm = torch.randperm(1500, generator=torch.Generator().manual_seed(3))
    chance = probe_cached_features(xtr, ytr[perm], xte, yte, lrs=(0.1,), wds=(0.0,), epochs=10, batch_size=128)
    majority = 100.0 * torch.bincount(yte).max().item() / len(yte)
    assert chance["top1"] < majority + 8.0 < out["top1"]


def test_a_head_of_the_grid_equals_that_head_trained_alone():
    x, y = separable(300)
    heads, grid, _ = train_heads(x, y, 4, lrs=(0.05, 0.5), wds=(0.0, 0.01), epochs=3, batch_size=64)
    alone, _, _ = train_heads(x, y, 4, lrs=(0.5,), wds=(0.01,), epochs=3, batch_size=64)
    i = grid.index({"lr": 0.5, "wd": 0.01})
    assert torch.allclose(heads.weight[i], alone.weight[0], atol=1e-5)
    assert torch.allclose(heads.bias[i], alone.bias[0], atol=1e-5)
    assert not torch.allclose(heads.weight[0], heads.weight[i])


def test_lars_step_matches_the_mae_formula():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))     # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([2.0])
    opt = LARS([w, b], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    opt.step()
    d = torch.tensor([[0.3, 1.4]])                          # grad + wd * w
    q = 0.001 * 5.0 / d.norm()                               # trust ratio
    assert torch.allclose(w.data, torch.tensor([[3.0, 4.0]]) - 0.5 * q * d)
    assert torch.allclose(b.data, torch.tensor([1.0 - 0.5 * 2.0]))  # 1-D: no decay, no trust ratio
    w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
    before = w.data.clone()
    opt.step()  # momentum carries the first update on
    d2 = 0.1 * before
    q2 = 0.001 * before.norm() / d2.norm()
    assert torch.allclose(w.data, before - 0.5 * (0.9 * q * d + q2 * d2), atol=1e-6)


def test_cached_and_augmented_commands_write_results(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    ckpt = write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path)
    common = [str(ckpt.parent), "--data", "demo", "--train-size", "160", "--test-size", "60", "--num-workers", "0",
              "--batch-size", "32", "--wandb-mode", "disabled"]
    cached = probe_main([*common, "--epochs", "5", "--lrs", "0.1,1", "--wds", "0", "--head-batch-size", "32"])
    aug = probe_main([*common, "--mode", "augmented", "--recipe", "mae", "--epochs", "2"])
    dino = probe_main([*common, "--mode", "augmented", "--recipe", "dino", "--epochs", "1", "--feature", "last2"])
    (path,) = (tmp_path / "run" / "eval").glob("linear_cls_demo-train160-test60_e5_*.json")
    on_disk = json.loads(path.read_text())
    assert on_disk["top1"] == cached["top1"] and len(on_disk["grid"]) == 2 and on_disk["checkpoint"] == str(ckpt)
    assert on_disk["fit_size"] == 140 and on_disk["held_out_size"] == 20  # 2 of 16 per class
    assert on_disk["batch_norm"] is True and on_disk["feature"] == "cls"  # the MAE protocol: cls + BN
    assert len(on_disk["evals"] if "evals" in on_disk else [0] * 5) == 5
    assert on_disk["top1_best_over_epochs"] >= 0 and on_disk["best_epoch"] in range(1, 6)
    assert len(list((tmp_path / "run" / "eval").glob("linear-aug-mae_cls_demo-train160-test60_e2_*.json"))) == 1
    assert len(list((tmp_path / "run" / "eval").glob("linear-aug-dino_last2_*_e1_*.json"))) == 1
    assert [e["epoch"] for e in aug["evals"]] == [1, 2] and aug["top1"] == aug["evals"][-1]["top1"]
    assert aug["recipe"] == "mae" and aug["lr"] == pytest.approx(0.1 * 32 / 256)
    assert aug["warmup_epochs"] == pytest.approx(2 * 10 / 90)  # the recipe's share: 10 of 90 epochs
    assert dino["lr"] == pytest.approx(0.001 * 32 / 256) and dino["feature_dim"] == 2 * 192
    assert all(0.0 <= r["top1"] <= 100.0 for r in (cached, aug, dino))


def test_each_methods_probe_protocol_and_crop():
    import math

    from torchvision.transforms import v2

    from eval_helpers import tiny_swin, tiny_vit
    from sslab.eval.preprocess import MAERandomResizedCrop, probe_train_transform
    from sslab.eval.protocols import knn_feature, probe_batch_norm, probe_feature, probe_recipe

    vit_s, vit_b = tiny_vit(embed_dim=384, depth=1, num_heads=2), tiny_vit(embed_dim=768, depth=1, num_heads=2)
    assert (probe_feature("dino", vit_s), probe_feature("dino", vit_b)) == ("last4", "last1+avg")
    assert probe_feature("mae", vit_b) == probe_feature(None, vit_b) == "cls" and probe_batch_norm("mae")
    assert not probe_batch_norm("dino") and probe_recipe("dino") == "dino" and probe_recipe(None) == "mae"
    assert probe_feature("dino", tiny_swin()) == knn_feature(tiny_swin()) == "avg" and knn_feature(vit_s) == "cls"
    # MAE util/crop.py: one draw of area and log-ratio, the box clipped to the image (no retry loop).
    crop = MAERandomResizedCrop(8, scale=(0.08, 1.0))
    img = torch.zeros(3, 30, 60)
    for seed in range(20):
        torch.manual_seed(seed)
        p = crop.make_params([img])
        torch.manual_seed(seed)
        target = 1800 * torch.empty(1).uniform_(0.08, 1.0).item()
        log_r = torch.log(torch.tensor((3 / 4, 4 / 3)))
        r = math.exp(torch.empty(1).uniform_(log_r[0].item(), log_r[1].item()).item())
        assert (p["width"], p["height"]) == (min(round(math.sqrt(target * r)), 60), min(round(math.sqrt(target / r)), 30))
        assert 0 <= p["top"] <= 30 - p["height"] and 0 <= p["left"] <= 60 - p["width"]
    dino = probe_train_transform("dino", 8, (0.5,), (0.5,), 1)
    (dino_crop,) = [t for t in dino.transforms if isinstance(t, v2.RandomResizedCrop)]
    assert dino_crop.interpolation == v2.InterpolationMode.BILINEAR  # torchvision's default, DINO eval_linear.py
    assert dino(torch.randint(0, 255, (3, 20, 20), dtype=torch.uint8)).shape == (1, 8, 8)  # encoder's channels
