"""Exported encoders: timm loads them in a fresh process with identical features; only encoder keys;
official MAE/DINO release layouts load through ``load_encoder``."""

import argparse
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny_mae_config
from sslab import export_encoder, load_encoder, train
from sslab.branches.dino import DINOBranch
from sslab.branches.mae import MAEBranch
from sslab.encoders import build_encoder, encoder_from_checkpoint
from sslab.engine import list_checkpoints
from sslab.errors import SslabError

SWIN_KWARGS = {"embed_dim": 24, "depths": [2, 2], "num_heads": [1, 2], "window_size": 4}
TINY_HEAD = dict(out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16, local_crops_number=2, local_crops_size=16,
                 warmup_teacher_temp_epochs=1)


def dino_checkpoint(tmp_path, name, **changes):
    """A checkpoint in the engine's layout from a real DINOBranch, the teacher moved away from the student."""
    cfg = tiny_mae_config(tmp_path / name, method="dino", **TINY_HEAD, **changes)
    branch = DINOBranch(cfg)
    with torch.no_grad():
        for p in branch.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = {"model": branch.model.state_dict(), "branch": branch.state_dict(), "step": 30, "epoch": 1,
            "config": cfg.to_dict()}
    path = tmp_path / name / "checkpoint-00000030.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path, ckpt


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A real 2-step MAE run (ViT, 1 channel 28 px), a DINO ViT and a DINO Swin checkpoint."""
    tmp = tmp_path_factory.mktemp("ckpts")
    cfg = tiny_mae_config(tmp / "mae", max_steps=2, batch_size=8)
    train(cfg)
    vit, _ = dino_checkpoint(tmp, "dino_vit", img_size=32, patch_size=8, in_chans=3, mean=(0.5,) * 3,
                             std=(0.25,) * 3, model_kwargs={"depth": 2})
    swin, _ = dino_checkpoint(tmp, "dino_swin", model="swin_tiny_patch4_window7_224", patch_size=None, img_size=32,
                              in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, model_kwargs=SWIN_KWARGS)
    swin_mae_cfg = tiny_mae_config(tmp / "mae_swin", model="swin_tiny_patch4_window7_224", img_size=32, patch_size=2,
                                   in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, model_kwargs=SWIN_KWARGS)
    swin_mae = tmp / "mae_swin" / "checkpoint-00000001.pt"
    swin_mae.parent.mkdir()
    torch.save({"model": MAEBranch(swin_mae_cfg).model.state_dict(), "config": swin_mae_cfg.to_dict(), "step": 1,
                "epoch": 0}, swin_mae)
    return {"mae_vit": list_checkpoints(cfg.output_dir)[-1], "dino_vit": vit, "dino_swin": swin, "mae_swin": swin_mae}


FRESH_PROCESS = textwrap.dedent("""
    import sys, timm, torch
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(1)
    out = {}
    for name, folder in zip(sys.argv[2::2], sys.argv[3::2]):
        model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
        x = load_file(sys.argv[1])[name]
        with torch.no_grad():
            out[name + ".features"] = model.forward_features(x).contiguous()
            out[name + ".pooled"] = model(x).contiguous()
    save_file(out, sys.argv[1] + ".out")
""")


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    """Export every checkpoint, then load all folders with plain timm in ONE fresh Python process."""
    tmp = tmp_path_factory.mktemp("exported")
    folders = {k: export_encoder(p, tmp / k) for k, p in checkpoints.items()}
    g = torch.Generator().manual_seed(0)
    inputs = {"mae_vit": torch.randn(3, 1, 28, 28, generator=g), "dino_vit": torch.randn(3, 3, 32, 32, generator=g),
              "dino_swin": torch.randn(3, 3, 32, 32, generator=g), "mae_swin": torch.randn(3, 3, 32, 32, generator=g)}
    save_file(inputs, str(tmp / "inputs.safetensors"))
    args = [str(tmp / "inputs.safetensors")] + [s for k, f in folders.items() for s in (k, str(f))]
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folders, inputs, load_file(str(tmp / "inputs.safetensors.out"))


@pytest.mark.parametrize("name", ["mae_vit", "dino_vit", "dino_swin", "mae_swin"])
def test_timm_local_dir_in_fresh_process_gives_identical_features(name, checkpoints, exported):
    _, inputs, fresh = exported
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order as the fresh process
    try:
        enc = encoder_from_checkpoint(checkpoints[name])
        with torch.no_grad():
            feats, pooled = enc.forward_features(inputs[name]), enc(inputs[name])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fresh[name + ".features"], feats)
    assert torch.equal(fresh[name + ".pooled"], pooled)
    assert pooled.shape == (3, enc.num_features)


@pytest.mark.parametrize("name", ["mae_vit", "dino_vit", "dino_swin", "mae_swin"])
def test_exported_weights_are_exactly_the_encoder(name, checkpoints, exported):
    folders, _, _ = exported
    ckpt = torch.load(checkpoints[name], weights_only=True)
    sd = load_file(str(folders[name] / "model.safetensors"))
    assert set(sd) == set(build_encoder(ckpt["config"]).state_dict())
    assert not [k for k in sd if k.startswith(("decoder", "mask_token", "head", "backbone."))]
    if name.startswith("dino"):  # the teacher backbone, not the student
        teacher = ckpt["branch"]["teacher"]
        assert all(torch.equal(sd[k], teacher["backbone." + k]) for k in sd)
        assert not torch.equal(sd["patch_embed.proj.weight"], ckpt["model"]["backbone.patch_embed.proj.weight"])
    else:
        assert all(torch.equal(sd[k], ckpt["model"][k]) for k in sd)


def test_config_and_metadata_describe_the_run(checkpoints, exported):
    folders, _, _ = exported
    cfg = json.loads((folders["mae_vit"] / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224" and cfg["num_classes"] == 0
    assert cfg["model_args"] == {"num_classes": 0, "img_size": 28, "in_chans": 1, "depth": 2, "patch_size": 4}
    assert cfg["pretrained_cfg"]["input_size"] == [1, 28, 28]
    assert cfg["pretrained_cfg"]["mean"] == [0.286] and cfg["pretrained_cfg"]["std"] == [0.353]
    swin = json.loads((folders["dino_swin"] / "config.json").read_text())
    assert swin["model_args"]["depths"] == [2, 2] and swin["model_args"]["window_size"] == 4
    meta = json.loads((folders["mae_vit"] / "sslab.json").read_text())
    assert meta["method"] == "mae" and meta["step"] == 2 and meta["config"]["epochs"] == 2
    assert meta["epochs_done"] == pytest.approx(2 / (4000 // 8))  # resolved steps_per_epoch of the run
    assert meta["last_logged"]["step"] == 2 and meta["last_logged"]["loss"] > 0
    readme = (folders["dino_vit"] / "README.md").read_text()
    assert "teacher backbone" in readme and "vit_tiny_patch16_224" in readme
    model = timm.create_model(f"local-dir:{folders['mae_vit']}", pretrained=True)
    dc = timm.data.resolve_data_config({}, model=model)
    assert dc["input_size"] == (1, 28, 28) and tuple(dc["mean"]) == (0.286,)


def test_export_records_results_and_refuses_to_overwrite(checkpoints, tmp_path):
    ckpt = tmp_path / "run" / "checkpoint-00000030.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(checkpoints["dino_vit"].read_bytes())
    (tmp_path / "run" / "eval").mkdir()
    (tmp_path / "run" / "eval" / "knn_cls.json").write_text(json.dumps(
        {"name": "knn_cls", "evaluator": "knn", "top1": 33.5, "top5": 80.0, "checkpoint": str(ckpt), "seconds": 3}))
    (tmp_path / "run" / "eval" / "old.json").write_text(json.dumps(
        {"name": "old", "evaluator": "knn", "top1": 10.0, "checkpoint": str(ckpt.with_name("checkpoint-1.pt"))}))
    out = export_encoder(ckpt, tmp_path / "e", results={"linear_top1": 42.5})
    assert json.loads((out / "sslab.json").read_text())["results"] == {
        "knn_cls": {"evaluator": "knn", "top1": 33.5, "top5": 80.0}, "linear_top1": 42.5}
    readme = (out / "README.md").read_text()
    assert "| linear_top1 | 42.5 |" in readme and "| knn_cls | 33.5 | 80.0 | evaluator knn |" in readme
    assert "10.0" not in readme and "value: 33.5" in readme.split("---")[1]  # model-index in the front matter
    with pytest.raises(FileExistsError, match="overwrite"):
        export_encoder(ckpt, out)
    export_encoder(ckpt, out, overwrite=True)


def test_export_command_line(checkpoints, tmp_path):
    from sslab.export import main

    (tmp_path / "r.json").write_text('{"linear_top1": 12.0}')
    out = main([str(checkpoints["mae_vit"]), str(tmp_path / "cli"), "--results", str(tmp_path / "r.json")])
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_load_encoder_reads_folder_and_checkpoint_alike(checkpoints, exported):
    folders, inputs, _ = exported
    a, b = load_encoder(folders["dino_swin"]), load_encoder(checkpoints["dino_swin"])
    x = inputs["dino_swin"]
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert timm.data.resolve_data_config({}, model=b)["mean"] == [0.5, 0.5, 0.5]


def _vit_tiny(**kw):
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2, **kw)


OFFICIAL = dict(model="vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)


def test_load_encoder_official_release_layouts(tmp_path):
    enc = _vit_tiny().state_dict()
    other = {k: v + 1 for k, v in enc.items()}
    decoder = {"mask_token": torch.zeros(1, 1, 16), "decoder_embed.weight": torch.zeros(16, 192),
               "decoder_pred.bias": torch.zeros(192)}
    args = argparse.Namespace(arch="vit_small", lr=5e-4, output_dir="/out", betas=[0.9, 0.95])
    layouts = {
        "mae_pretrain.pth": ({"model": enc}, enc),
        "mae_visualize.pth": ({"model": {**enc, **decoder}, "args": args, "epoch": 799}, enc),
        "dino_backbone.pth": (enc, enc),
        "dino_full.pth": ({"student": {f"module.backbone.{k}": v for k, v in other.items()},
                           "teacher": {**{f"backbone.{k}": v for k, v in enc.items()},
                                       "head.mlp.0.weight": torch.zeros(4, 192)},
                           "args": args, "epoch": 100, "dino_loss": {"center": torch.zeros(1, 4)}}, enc),
        "dino_full_ddp_teacher.pth": ({"student": {}, "teacher": {f"module.backbone.{k}": v for k, v in other.items()}},
                                      other),
    }
    for name, (obj, expected) in layouts.items():
        torch.save(obj, tmp_path / name)
        got = load_encoder(tmp_path / name, **OFFICIAL).state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected), name
    inferred = load_encoder(tmp_path / "mae_pretrain.pth").state_dict()  # no model=: read off the shapes
    assert all(torch.equal(inferred[k], enc[k]) for k in enc)
    with pytest.raises(ValueError, match="does not fit timm 'vit_tiny_patch16_224'.*blocks.2"):
        load_encoder(tmp_path / "mae_pretrain.pth", **{**OFFICIAL, "depth": 3})


def test_export_is_portable_readable_and_pushes_to_the_hub(checkpoints, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from sslab.export import main as export_main

    calls = []
    # Only the two network calls are replaced; everything up to them (folder, patterns, repo) is real.
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload(self, repo_id, folder_path, **kw):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        calls.append(("upload", repo_id, files, kw["allow_patterns"]))
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    out = export_main([str(checkpoints["mae_vit"]), str(tmp_path / "e"), "--push-to-hub", "me/mae-tiny"])
    assert calls[0] == ("create", "me/mae-tiny", {"repo_type": "model", "private": False, "exist_ok": True})
    assert calls[1][:3] == ("upload", "me/mae-tiny", ["README.md", "config.json", "model.safetensors", "sslab.json"])
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f
    meta_text = (out / "sslab.json").read_text()
    strings = []

    def walk(x):
        if isinstance(x, dict):
            [walk(v) for v in x.values()]
        elif isinstance(x, list):
            [walk(v) for v in x]
        elif isinstance(x, str):
            strings.append(x)

    walk(json.loads(meta_text))
    assert not [s for s in strings if os.path.isabs(s)] and str(tmp_path) not in meta_text
    assert json.loads(meta_text)["checkpoint"] == f"{checkpoints['mae_vit'].parent.name}/{checkpoints['mae_vit'].name}"
    front = (out / "README.md").read_text().split("---")[1]
    assert "library_name: timm" in front and "- mae" in front and "image-feature-extraction" in front


@pytest.mark.parametrize("layout", ["mae", "dino"])
def test_load_encoder_infers_the_architecture_of_a_release_file(tmp_path, layout, capsys):
    ref = timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2).eval()
    sd = ref.state_dict()
    obj = {"model": sd} if layout == "mae" else {"teacher": {f"backbone.{k}": v for k, v in sd.items()},
                                                 "student": {}}
    torch.save(obj, tmp_path / "release.pth")
    enc = load_encoder(tmp_path / "release.pth")
    line = capsys.readouterr().err.strip()
    assert line == ("sslab: release.pth: inferred vit_small_patch16_224 with width 384, depth 2, patch 8, 4x4 positions "
                    "(32 px), 3 channels, mlp ratio 4 (6 heads assumed for width 384)")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(enc(x), ref(x))
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith("patch_embed")}}, tmp_path / "odd.pth")
    with pytest.raises(SslabError, match="cannot infer the architecture"):
        load_encoder(tmp_path / "odd.pth")
