"""Fine-tuning: layer-wise lr decay groups (ViT per block, Swin per stage), the classifier, the command."""

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.optim import param_groups_layer_decay

from eval_helpers import tiny_swin, tiny_vit, write_mae_checkpoint
from sslab.eval.cli import open_encoder
from sslab.eval.finetune import (build_classifier, default_blr, default_drop_path, default_layer_decay,
                                 layer_decay_groups)
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


def test_swin_layer_decay_per_block_is_simmims_rule():
    d = 0.9
    model = tiny_swin(num_classes=5)  # 2 stages of 2 blocks: 4 block layers, the top is layer 5
    got = scales(layer_decay_groups(model, 0.05, d, mode="block"))
    assert got["patch_embed.proj.weight"][0] == pytest.approx(d ** 5)
    assert got["layers.0.blocks.0.attn.qkv.weight"][0] == pytest.approx(d ** 4)
    assert got["layers.0.blocks.1.attn.qkv.weight"][0] == pytest.approx(d ** 3)
    # SimMIM get_swin_layer_id: the patch merging between stages goes with the last block before it.
    assert got["layers.1.downsample.reduction.weight"][0] == pytest.approx(d ** 3)
    assert got["layers.1.blocks.1.attn.qkv.weight"][0] == pytest.approx(d ** 1)
    assert got["head.fc.weight"][0] == 1.0 and got["norm.weight"] == (1.0, 0.0)
    assert default_layer_decay(model, "block") == 0.9 and default_layer_decay(model, "stage") == 0.65


def test_defaults_per_model_size():
    # MAE A.3 / Table 9: drop path 0.1 / 0.2 / 0.3 and base lr 5e-4 / 1e-3 for ViT-B / L / H.
    huge = tiny_vit(embed_dim=1280, depth=1, num_heads=2)
    large = tiny_vit(embed_dim=1024, depth=1, num_heads=2)
    assert (default_drop_path(huge), default_drop_path(large), default_drop_path(tiny_vit())) == (0.3, 0.2, 0.1)
    assert (default_blr(huge), default_blr(tiny_vit())) == (1e-3, 5e-4)
    assert default_layer_decay(huge) == 0.75 and default_layer_decay(tiny_vit()) == 0.65


def test_swin_layer_decay_per_stage():
    d = 0.5
    model = tiny_swin(num_classes=5)  # 2 stages of 2 blocks
    got = scales(layer_decay_groups(model, 0.05, d, mode="stage"))
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


def test_classifier_at_another_resolution_resamples_positions(tmp_path):
    src = open_encoder(write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path))  # 28 px, 7x7
    model = build_classifier(src, num_classes=3, drop_path=0.0, img_size=36)  # patch 4: 9x9
    assert model.pos_embed.shape == (1, 1 + 81, 192)
    assert torch.equal(model.pos_embed[0, 0], src.encoder.pos_embed[0, 0])  # the class token's position is kept
    assert model(torch.randn(2, 1, 36, 36)).shape == (2, 3)


def test_finetune_command_is_a_run_with_records_and_a_timm_classifier(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    ckpt = write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path)
    common = [str(ckpt), "--data", "demo", "--test-size", "40", "--warmup-epochs", "1", "--batch-size", "8",
              "--num-workers", "0", "--wandb-mode", "disabled", "--log-every", "1"]
    out = finetune_main([*common, "--train-size", "64", "--epochs", "2", "--accum-iter", "2"])
    small = finetune_main([*common, "--train-size", "32", "--epochs", "1", "--accum-iter", "2"])
    records = sorted((tmp_path / "run" / "eval").glob("finetune_*.json"))
    assert len(records) == 2  # a 32-image 1-epoch run does not overwrite the 64-image 2-epoch one
    big = next(json.loads(p.read_text()) for p in records if "_e2_" in p.name)
    assert big["top1"] == out["top1"] and big["epochs"] == 2 and big["train_size"] == 64 and small["epochs"] == 1
    assert big["data"]["train"] == {"spec": "demo", "split": "train", "folder": None, "images": 64, "of": 4000}
    assert big["data"]["test"]["split"] == "test" and big["data"]["test"]["images"] == 40
    assert [e["epoch"] for e in out["evals"]] == [1, 2] and "top1_best_over_epochs" in big["reported"]
    assert big["top1_best_over_epochs"] == max(e["top1"] for e in out["evals"]) >= big["top1"]
    # Effective batch 8 x accum 2 = 16: the lr scales with it; 64 images -> 4 optimiser steps per epoch.
    assert out["effective_batch"] == 16 and out["lr"] == pytest.approx(5e-4 * 16 / 256)
    assert out["layer_decay"] == 0.65 and out["drop_path"] == 0.1
    run = Path(out["output_dir"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8] and all("finetune/train_loss" in r for r in rows)
    assert [p.name for p in sorted(run.glob("checkpoint-*.pt"))] == ["checkpoint-00000001.pt", "checkpoint-00000002.pt"]
    # The classifier loads in timm with its head and gives the run's own test accuracy.
    model = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    assert model.num_classes == 10 and model.global_pool == "avg"
    src = open_encoder(ckpt)
    from sslab.data.sources import load_demo
    from sslab.eval.cli import eval_preprocess
    from sslab.eval.features import subset_indices

    test = load_demo("test", 1)
    idx = subset_indices(test.labels, 40, 0)
    x = torch.stack([eval_preprocess(src)(test[i][0]) for i in idx])
    with torch.no_grad():
        acc = (model(x).argmax(1) == test.labels[idx]).double().mean().item() * 100
    assert acc == pytest.approx(out["top1"])
    # The export-style README line states data, sizes and epochs.
    from sslab.eval.results import describe

    line = describe(big)
    assert "train 64/4000 of `demo` (train)" in line and "test 40/1000" in line and "2 epochs" in line


def test_finetune_interrupted_and_resumed_gives_the_same_result(tmp_path):
    """A real process killed (SIGKILL) after its first epoch's checkpoint, then resumed with --resume auto."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    ckpt = write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "SSLAB_CACHE": str(tmp_path / "cache")}
    args = [str(ckpt), "--data", "demo", "--train-size", "32", "--test-size", "20", "--epochs", "2",
            "--warmup-epochs", "1", "--batch-size", "8", "--num-workers", "0", "--wandb-mode", "disabled",
            "--log-every", "0"]
    os.environ["SSLAB_CACHE"] = env["SSLAB_CACHE"]
    try:
        finetune_main([*args, "--run-dir", str(tmp_path / "a"), "--name", "a"])  # uninterrupted, in this process
        proc = subprocess.Popen([sys.executable, "-m", "sslab.eval.finetune", *args, "--run-dir", str(tmp_path / "b"),
                                 "--name", "b"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while not (tmp_path / "b" / "checkpoint-00000001.pt").exists() and proc.poll() is None \
                and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL  # it was interrupted, not finished
        assert not (tmp_path / "b" / "model.safetensors").exists()
        resumed = finetune_main([*args, "--run-dir", str(tmp_path / "b"), "--name", "b", "--resume", "auto"])
    finally:
        del os.environ["SSLAB_CACHE"]
    assert resumed["resumed_from"].endswith("checkpoint-00000001.pt")
    a, b = (json.loads((tmp_path / "run" / "eval" / f"{n}.json").read_text()) for n in ("a", "b"))
    assert a["evals"] == b["evals"] and a["top1"] == b["top1"] and len(a["evals"]) == 2
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


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


def test_randaugment_zero_bit_posterize_gives_black_not_an_error():
    from PIL import Image
    from timm.data import create_transform

    from sslab.eval.finetune import _zero_bit_posterize_is_black

    tf = create_transform(32, is_training=True, auto_augment="rand-m9-mstd0.5-inc1")
    _zero_bit_posterize_is_black(tf)
    (op,) = [op for t in tf.transforms for op in getattr(t, "ops", []) if op.name.startswith("Posterize")]
    assert op.aug_fn(Image.new("RGB", (4, 4), (200, 100, 50)), 0).getpixel((0, 0)) == (0, 0, 0)
    assert op.aug_fn(Image.new("RGB", (4, 4), (200, 100, 50)), 1).getpixel((0, 0)) == (128, 0, 0)
