"""The engine end to end on CPU: loss falls, resume replays, accumulation, validation, logging."""

import json

import pytest
import torch

from conftest import read_metrics, tiny_mae_config
from sslab import train
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.errors import SslabError


def test_tiny_run_loss_falls_and_logs_everything(tmp_path):
    cfg = tiny_mae_config(tmp_path, epochs=1, max_steps=40, batch_size=32, log_every=1)
    out = train(cfg)
    rows = read_metrics(cfg.output_dir)
    assert out["step"] == 40 and len(rows) == 40
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    for key in ("loss", "lr", "weight_decay", "grad_norm", "images_per_sec", "skipped_files", "epoch"):
        assert key in rows[-1]
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "epoch", "loss"]
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["effective_batch"] == 32 and resolved["lr_resolved"] == pytest.approx(1.5e-3 * 32 / 256)
    assert [p.name for p in list_checkpoints(cfg.output_dir)] == ["checkpoint-00000040.pt"]


def test_resume_replays_the_uninterrupted_run(tmp_path, image_folder):
    # 24 images, batch 4 -> 6 steps per epoch; stop at step 8 (mid-epoch 2), resume with workers.
    # Drop path draws from the global RNG every step, so it must be restored exactly too.
    common = dict(data=str(image_folder), img_size=16, in_chans=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                  batch_size=4, epochs=3, warmup_epochs=1, log_every=1, save_every_steps=4, keep_last=5,
                  model_kwargs={"depth": 2, "drop_path_rate": 0.2})
    full = tiny_mae_config(tmp_path / "full", **common)
    train(full)
    part = tiny_mae_config(tmp_path / "part", **common, max_steps=8)
    train(part)
    train(part.replace(max_steps=None, resume="auto", num_workers=2))
    a, b = read_metrics(full.output_dir), read_metrics(part.output_dir)
    assert [r["step"] for r in b] == list(range(1, 19))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    wa = load_checkpoint(list_checkpoints(full.output_dir)[-1])["model"]
    wb = load_checkpoint(list_checkpoints(part.output_dir)[-1])["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_gradient_accumulation_matches_the_large_batch(tmp_path):
    big = tiny_mae_config(tmp_path / "big", batch_size=16, max_steps=2)
    acc = tiny_mae_config(tmp_path / "acc", batch_size=8, accum_iter=2, max_steps=2)
    train(big), train(acc)
    ra, rb = read_metrics(big.output_dir), read_metrics(acc.output_dir)
    assert [r["lr"] for r in ra] == [r["lr"] for r in rb]
    for x, y in zip(ra, rb):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
    wa = load_checkpoint(list_checkpoints(big.output_dir)[-1])["model"]
    wb = load_checkpoint(list_checkpoints(acc.output_dir)[-1])["model"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5


def test_bf16_autocast_runs_on_cpu(tmp_path):
    out = train(tiny_mae_config(tmp_path, mixed_precision="bf16", max_steps=2))
    assert out["step"] == 2 and all(torch.isfinite(torch.tensor(out["losses"])))


@pytest.mark.parametrize("changes,error,match", [
    (dict(mixed_precision="fp16"), ValueError, "needs a CUDA GPU"),
    (dict(mixed_precision="fp8"), ValueError, r"mixed_precision 'fp8' \(the recipe or its --mixed-precision flag\) is not 'no', 'fp16' or 'bf16'"),
    (dict(mask_ratio=1.0), ValueError, "mask_ratio"),
    (dict(method="simclr"), ValueError, "method 'simclr'"),
    (dict(data="/no/such/dir"), ValueError, "does not exist"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(img_size=30), ValueError, "not a multiple of patch_size"),
    (dict(mean=(0.5, 0.5, 0.5)), ValueError, "mean/std have 3/1 values"),
    (dict(batch_size=4096), ValueError, "fewer than one global batch"),
    (dict(monitor_every_epochs=-1), ValueError, "monitor_every_epochs must be >= 0"),
    (dict(vis_num_images=0), ValueError, "vis_num_images >= 1"),
])
def test_bad_configs_fail_before_compute(tmp_path, changes, error, match):
    with pytest.raises(SslabError, match=match):  # a user's mistake: one line, no traceback from the entry points
        train(tiny_mae_config(tmp_path, **changes))
    assert not list_checkpoints(tmp_path / "run")


def test_existing_run_needs_resume(tmp_path):
    cfg = tiny_mae_config(tmp_path, max_steps=1)
    train(cfg)
    with pytest.raises(ValueError, match="--resume auto"):
        train(cfg)
    with pytest.raises(ValueError, match="effective batch"):
        train(cfg.replace(resume="auto", batch_size=8))


def test_wandb_offline_without_credentials_and_never_fatal(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    from sslab.engine.logger import resolve_wandb_mode

    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")

    import wandb

    def broken(*a, **k):
        raise RuntimeError("wandb service unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = tiny_mae_config(tmp_path, max_steps=2, wandb_mode="online")
    assert train(cfg)["step"] == 2
    assert len(read_metrics(cfg.output_dir)) == 2


def test_effective_batch_size_sets_accumulation():
    from sslab.engine.train import resolve_accum_iter

    cfg = tiny_mae_config(__import__("pathlib").Path("."), batch_size=64, effective_batch_size=4096)
    assert resolve_accum_iter(cfg, 8) == 8 and resolve_accum_iter(cfg, 64) == 1
    with pytest.raises(ValueError, match="not a multiple of batch_size 64 x 3 processes"):
        resolve_accum_iter(cfg, 3)
    with pytest.raises(ValueError, match="contradicts"):
        resolve_accum_iter(cfg.replace(accum_iter=2), 8)


def test_wandb_offline_run_records_metrics_and_config(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    cfg = tiny_mae_config(tmp_path, max_steps=2, wandb_mode="auto", wandb_tags=("t1",), wandb_group="g")
    train(cfg)
    run_id = (tmp_path / "run" / "wandb_id.txt").read_text().strip()
    runs = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "wandb did not write an offline run"
