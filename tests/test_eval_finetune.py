"""Fine-tuning: layer-wise lr decay groups (ViT per block, Swin per stage), the classifier, the command."""

import json

import pytest
import torch
from timm.optim import param_groups_layer_decay

from eval_helpers import tiny_swin, tiny_vit, write_mae_checkpoint
from sslab.eval.cli import open_encoder
from sslab.eval.finetune import build_classifier, layer_decay_groups
from sslab.eval.finetune import main as finetune_main


def scales(groups):
    """name -> (lr_scale, weight_decay)."""
    return {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["names"]}


def test_vit_layer_decay_is_maes_rule():
    d = 0.5
    model = tiny_vit(num_classes=5, global_pool="avg")  # depth 3: blocks 0..2
    got = scales(layer_decay_groups(model, 0.05, d))
    assert set(got) == {n for n, _ in model.named_parameters()}
    for name, (scale, wd) in got.items():
        # MAE util/lr_decay.py: embeddings layer 0, block i layer i+1, the rest (fc_norm, head) layer depth+1.
        layer = 0 if name.startswith(("cls_token", "pos_embed", "patch_embed")) else \
            int(name.split(".")[1]) + 1 if name.startswith("blocks.") else 4
        assert scale == pytest.approx(d ** (4 - layer)), name
        no_wd = name.endswith(".bias") or "norm" in name or name in ("cls_token", "pos_embed")
        assert wd == (0.0 if no_wd else 0.05), name
    assert got["blocks.2.attn.qkv.weight"][0] == pytest.approx(0.5) and got["head.weight"][0] == 1.0
    # The same numbers as timm's param_groups_layer_decay.
    names = {id(p): n for n, p in model.named_parameters()}
    timm_scales = {names[id(p)]: g["lr_scale"] for g in param_groups_layer_decay(model, 0.05, model.no_weight_decay(),
                                                                                 layer_decay=d) for p in g["params"]}
    assert timm_scales == pytest.approx({n: s for n, (s, _) in got.items()})


def test_swin_layer_decay_is_per_stage():
    d = 0.5
    model = tiny_swin(num_classes=5)  # 2 stages of 2 blocks
    got = scales(layer_decay_groups(model, 0.05, d))
    for name, (scale, wd) in got.items():
        if name.startswith("patch_embed"):
            expected = d ** 3
        elif name.startswith("layers."):
            expected = d ** (2 - int(name.split(".")[1]))  # every block (and the downsample) of a stage alike
        else:  # final norm, head
            expected = 1.0
        assert scale == pytest.approx(expected), name
        if "relative_position_bias_table" in name:
            assert wd == 0.0
    assert got["layers.0.blocks.0.attn.qkv.weight"] == got["layers.0.blocks.1.attn.qkv.weight"] == (0.25, 0.05)
    assert got["layers.1.downsample.reduction.weight"][0] == pytest.approx(0.5)


def test_classifier_starts_from_the_encoder(tmp_path):
    src = open_encoder(write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path))
    model = build_classifier(src, num_classes=7, drop_path=0.1)
    enc = src.encoder.state_dict()
    own = model.state_dict()
    assert all(torch.equal(own[k], enc[k]) for k in enc if not k.startswith("norm."))
    assert model.global_pool == "avg" and "fc_norm.weight" in own and "norm.weight" not in own  # MAE: fc_norm
    assert model.head.weight.shape == (7, 192) and model.head.weight.abs().max() < 1e-4
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_finetune_command_writes_a_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    ckpt = write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path)
    out = finetune_main([str(ckpt), "--data", "demo", "--train-size", "64", "--test-size", "40", "--epochs", "2",
                         "--warmup-epochs", "1", "--batch-size", "16", "--num-workers", "0", "--eval-every", "1",
                         "--wandb-mode", "disabled"])
    on_disk = json.loads((tmp_path / "run" / "eval" / "finetune.json").read_text())
    assert on_disk["top1"] == out["top1"] and [e["epoch"] for e in out["evals"]] == [1, 2]
    assert out["layer_decay"] == 0.65 and out["drop_path"] == 0.1 and out["lr"] == pytest.approx(5e-4 * 16 / 256)
    assert 0.0 <= out["top1"] <= 100.0 and out["max_top1"] >= out["top1"]


def test_finetune_and_augmented_probe_run_under_torchrun(tmp_path):
    """'Any process count': both training evaluators run data-parallel over gloo and score every test image."""
    import os
    import subprocess
    import sys

    ckpt = write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLAB_CACHE": str(tmp_path / "cache")}
    common = [str(ckpt), "--data", "demo", "--train-size", "128", "--test-size", "60", "--num-workers", "0",
              "--batch-size", "32", "--epochs", "1", "--warmup-epochs", "0", "--wandb-mode", "disabled"]
    for port, module, extra in (("29541", "sslab.eval.finetune", ["--name", "ft2"]),
                                ("29542", "sslab.eval.linear_probe", ["--mode", "augmented", "--name", "aug2"])):
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                              port, "-m", module, *common, *extra], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    for name in ("ft2", "aug2"):
        r = json.loads((tmp_path / "run" / "eval" / f"{name}.json").read_text())
        assert r["world_size"] == 2 and r["test_size"] == 60 and 0.0 <= r["top1"] <= 100.0
