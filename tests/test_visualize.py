"""Pictures: attention equals timm's own weights, reconstructions invert the MAE target exactly, the
commands write PNGs of the expected size, and pictures during training change nothing."""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import read_metrics, tiny_mae_config
from sslab import create_mae, train
from sslab.branches.mae import mae_model_kwargs
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.losses.mae_loss import patch_targets
from sslab.models.swin_mae import create_swin_mae
from sslab.viz import attention_grid, mae_reconstruct, mae_reconstruction_grid, similarity_map, threshold_top_mass
from sslab.viz import vit_cls_attention
from sslab.viz.grid import HEADER, PAD
from sslab.visualize import main as visualize


def png(path):
    """Open a PNG after checking the file is a complete, valid PNG."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    return Image.open(path).convert("RGB")


def expected_size(rows, cols, cell):
    return cols * cell + (cols + 1) * PAD, HEADER + rows * cell + (rows + 1) * PAD


@pytest.mark.parametrize("dynamic", [False, True])
def test_vit_attention_equals_timm_unfused_attention_weights(dynamic):
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2,
                              dynamic_img_size=dynamic).eval()
    x = torch.randn(2, 3, 40 if dynamic else 32, 32)
    ours = vit_cls_attention(model, x)
    grid = (5, 4) if dynamic else (4, 4)
    assert ours.shape == (2, 3, *grid)
    # Reference: timm's explicit softmax path, the weights caught where they enter attn_drop.
    attn = model.blocks[-1].attn
    attn.fused_attn = False
    seen = {}
    hook = attn.attn_drop.register_forward_hook(lambda m, i, o: seen.__setitem__("w", o))
    with torch.no_grad():
        model.forward_features(x)
    hook.remove()
    torch.testing.assert_close(ours, seen["w"][:, :, 0, 1:].reshape(2, 3, *grid), rtol=1e-5, atol=1e-6)


def test_threshold_keeps_the_smallest_set_holding_the_mass():
    maps = torch.tensor([[0.5, 0.1], [0.3, 0.1]])[None]  # patches sorted: 0.5, 0.3, 0.1, 0.1
    assert threshold_top_mass(maps, 0.6).tolist() == [[[True, False], [True, False]]]  # 0.5 + 0.3 >= 0.6
    assert threshold_top_mass(maps, 0.5).tolist() == [[[True, False], [False, False]]]
    assert threshold_top_mass(maps * 7, 0.6).tolist() == threshold_top_mass(maps, 0.6).tolist()  # renormalised
    assert threshold_top_mass(maps, 1.0).all()


class PerfectMAE(torch.nn.Module):
    """Predicts exactly the MAE target of every patch (normalised per patch if ``norm_pix_loss``)."""

    def __init__(self, mae):
        super().__init__()
        self.mae, self.norm_pix_loss, self.num_patches = mae, mae.norm_pix_loss, mae.num_patches
        self.patchify, self.unpatchify = mae.patchify, mae.unpatchify

    def forward(self, imgs, mask_ratio, noise):
        _, _, mask = self.mae(imgs, mask_ratio=mask_ratio, noise=noise)
        return None, patch_targets(self.patchify(imgs), self.norm_pix_loss), mask


@pytest.mark.parametrize("arch,norm_pix", [("vit", True), ("vit", False), ("swin", True)])
def test_reconstruction_of_a_perfect_predictor_is_the_image(arch, norm_pix):
    dec = dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, norm_pix_loss=norm_pix)
    if arch == "vit":
        mae = create_mae("vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1, depth=1, **dec)
    else:  # masking units of 4x4 px: patch 2, one merge
        mae = create_swin_mae("swin_tiny_patch4_window7_224", img_size=28, patch_size=2, in_chans=1, window_size=7,
                              depths=(2, 2), num_heads=(1, 2), embed_dim=16, **dec)
    mean, std = (0.3,), (0.4,)
    pixels = torch.rand(3, 1, 28, 28)
    imgs = (pixels - 0.3) / 0.4
    rng = torch.get_rng_state()
    out = mae_reconstruct(PerfectMAE(mae), imgs, 0.75, mean, std, seed=1)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not consumed
    torch.testing.assert_close(out["original"], pixels, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["reconstruction"], pixels, rtol=0, atol=2e-5)
    removed = mae.unpatchify(out["mask"].unsqueeze(-1).expand(-1, -1, 16))
    assert out["mask"].sum(1).tolist() == [49 - int(49 * 0.25)] * 3
    assert torch.equal(out["pasted"][removed == 0], out["original"][removed == 0])
    assert (out["masked"][removed == 1] == 0.5).all()
    again = mae_reconstruct(mae, imgs, 0.75, mean, std, seed=1)
    assert torch.equal(again["mask"], out["mask"])  # fixed seed: the same masks every time


def test_reconstruction_grid_layout_and_cells():
    mae = create_mae("vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1, depth=1, decoder_embed_dim=32,
                     decoder_depth=1, decoder_num_heads=4)
    pixels = torch.rand(2, 1, 28, 28)
    grid = mae_reconstruction_grid(mae, (pixels - 0.5) / 0.25, 0.75, (0.5,), (0.25,))
    assert grid.size == expected_size(2, 4, 112)  # 28 px cells enlarged 4x
    top_left = np.asarray(grid)[HEADER + PAD: HEADER + PAD + 112, PAD: PAD + 112, 0]
    want = (pixels[0, 0].repeat_interleave(4, 0).repeat_interleave(4, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.abs(top_left.astype(int) - want.astype(int)).max() <= 1


def mae_checkpoint(tmp_path):
    cfg = tiny_mae_config(tmp_path)
    ckpt = {"model": create_mae(cfg.model, **mae_model_kwargs(cfg)).state_dict(), "config": cfg.to_dict(), "step": 0,
            "epoch": 0}
    path = tmp_path / "checkpoint-00000000.pt"
    torch.save(ckpt, path)
    return path


def test_mae_command_writes_the_grid(tmp_path):
    path = mae_checkpoint(tmp_path)
    out = visualize(["mae", str(path), "--num-images", "3"])
    assert out == tmp_path / "pictures" / "checkpoint-00000000_reconstruction.png"
    assert png(out).size == expected_size(3, 4, 112)


def test_attention_command_on_checkpoint_export_and_swin(tmp_path, monkeypatch):
    from sslab import export_encoder

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    path = mae_checkpoint(tmp_path)
    out = visualize(["attention", str(path), "--num-images", "2", "--out", str(tmp_path / "a.png")])
    assert png(out).size == expected_size(2, 2 + 3, 112)  # image, mean, 3 heads of ViT-Tiny
    folder = export_encoder(path, tmp_path / "exported")
    out = visualize(["attention", str(folder), "--num-images", "2", "--threshold", "0.6"])
    # Pictures of an exported encoder go to the working directory, never into the (shared) export folder.
    assert out == Path("pictures") / "exported_attention.png" and png(out).size == expected_size(2, 5, 112)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "sslab.json"]

    swin = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, img_size=32, embed_dim=24, depths=(2, 2),
                             num_heads=(1, 2), window_size=4)
    torch.save(swin.state_dict(), tmp_path / "swin.pth")  # a bare state dict, like an official release
    kwargs = '{"img_size": 32, "embed_dim": 24, "depths": [2, 2], "num_heads": [1, 2], "window_size": 4}'
    out = visualize(["attention", str(tmp_path / "swin.pth"), "--model", "swin_tiny_patch4_window7_224",
                     "--model-kwargs", kwargs, "--data", "demo", "--num-images", "3"])
    assert png(out).size == expected_size(3, 2, 128)  # image, similarity; 32 px cells enlarged 4x


def test_swin_similarity_map_is_cosine_to_the_pooled_feature():
    swin = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, img_size=32, embed_dim=24, depths=(2, 2),
                             num_heads=(1, 2), window_size=4).eval()
    x = torch.randn(2, 3, 32, 32)
    sim = similarity_map(swin, x)
    assert sim.shape == (2, 1, 4, 4)
    with torch.no_grad():
        tokens = swin.forward_features(x).flatten(1, 2)  # (N, 16, C)
        pooled = swin(x)  # timm's own average pooling of the same tokens
    want = torch.nn.functional.cosine_similarity(tokens, pooled[:, None], dim=-1).reshape(2, 1, 4, 4)
    torch.testing.assert_close(sim, want, rtol=1e-5, atol=1e-5)
    assert attention_grid(swin, x, (0.5,) * 3, (0.25,) * 3).size == expected_size(2, 2, 128)


def test_pictures_during_training_change_nothing(tmp_path, image_folder):
    # 24 images, batch 12: 2 steps per epoch, pictures after epochs 1 and 2; a narrow ViT keeps it quick.
    common = dict(data=str(image_folder), img_size=16, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=12,
                  epochs=2, log_every=1, vis_num_images=3, model_kwargs={"depth": 1, "embed_dim": 48, "num_heads": 3})
    plain = tiny_mae_config(tmp_path / "plain", **common)
    pics = tiny_mae_config(tmp_path / "pics", **common, vis_every_epochs=1, vis_data=f"{image_folder}:all")
    train(plain), train(pics)
    assert [r["loss"] for r in read_metrics(plain.output_dir)] == [r["loss"] for r in read_metrics(pics.output_dir)]
    a = load_checkpoint(list_checkpoints(plain.output_dir)[-1])
    b = load_checkpoint(list_checkpoints(pics.output_dir)[-1])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert not (tmp_path / "plain" / "run" / "pictures").exists()
    for epoch in (1, 2):  # 16 px images enlarged 7x to 112 px cells
        assert png(tmp_path / "pics" / "run" / "pictures" / f"epoch_{epoch:04d}_reconstruction.png").size == \
            expected_size(3, 4, 112)


def test_dino_pictures_show_the_teacher_and_reach_the_logger(tmp_path):
    from sslab.branches.dino import DINOBranch
    from sslab.viz import fixed_images, log_epoch_pictures

    cfg = tiny_mae_config(tmp_path, method="dino", img_size=28, patch_size=4, out_dim=64, head_hidden_dim=32,
                          head_bottleneck_dim=16, local_crops_number=0, warmup_teacher_temp_epochs=1,
                          vis_num_images=2)
    branch = DINOBranch(cfg)
    with torch.no_grad():
        for p in branch.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))

    class Logger:
        calls = []

        def log_image(self, key, path, step):
            self.calls.append((key, path, step))

    written = log_epoch_pictures(cfg, branch.model, branch, tmp_path / "run", 3, 30, Logger())
    path = tmp_path / "run" / "pictures" / "epoch_0003_attention.png"
    assert written == {"pictures/attention": path} and Logger.calls == [("pictures/attention", path, 30)]
    imgs = fixed_images("demo", 2, 28, cfg.mean, cfg.std, 1)
    teacher = attention_grid(branch.teacher.backbone, imgs, cfg.mean, cfg.std)
    student = attention_grid(branch.model.backbone, imgs, cfg.mean, cfg.std)
    assert np.array_equal(np.asarray(png(path)), np.asarray(teacher))
    assert not np.array_equal(np.asarray(teacher), np.asarray(student))
