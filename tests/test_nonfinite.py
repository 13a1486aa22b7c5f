"""Non-finite losses and gradients: caught before the optimiser step, never applied or saved (real runs)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_metrics, tiny_mae_config
from sslab import train
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.engine.nonfinite import NonFiniteError, nonfinite_tensors, poison
from sslab.errors import SslabError


def assert_all_checkpoints_finite(run_dir) -> list[dict]:
    states = [load_checkpoint(p) for p in list_checkpoints(run_dir)]
    assert states, "no checkpoint was written"
    for s in states:
        assert nonfinite_tensors(s) == [], f"checkpoint of step {s['step']} holds non-finite tensors"
    return states


def test_huge_lr_stops_before_the_bad_update_is_applied_or_saved(tmp_path):
    # The reproduction: --base-lr 1e6 used to save 84 of 86 non-finite tensors at step 2.
    cfg = tiny_mae_config(tmp_path, base_lr=1e6, save_every_steps=1, keep_last=20, max_steps=10)
    with pytest.raises(NonFiniteError) as info:
        train(cfg)
    msg = str(info.value)
    assert isinstance(info.value, SslabError) and isinstance(info.value, FloatingPointError)
    assert "\n" not in msg
    states = assert_all_checkpoints_finite(cfg.output_dir)
    good = states[-1]["step"]
    assert msg.startswith(f"step {good + 1} (epoch 0): the gradients of ")
    assert f"last good checkpoint: {list_checkpoints(cfg.output_dir)[-1]}" in msg
    assert "patch_embed.proj.weight" in msg and "--nonfinite-skip-limit" in msg
    # and --resume auto then starts from that finite checkpoint and stops again at once, same line
    with pytest.raises(NonFiniteError, match=f"step {good + 1} "):
        train(cfg.replace(resume="auto"))


def test_an_infinite_loss_with_finite_gradients_still_poisons_the_update():
    x = torch.tensor([1e20, 1.0], requires_grad=True)
    loss = (x * x).sum()  # inf, while d loss / d x = 2x is finite
    assert torch.isinf(loss)
    poison(loss).backward()
    assert torch.isnan(x.grad).all()
    y = torch.tensor([3.0], requires_grad=True)
    ok = (y * y).sum()
    assert torch.equal(poison(ok), ok)
    poison(ok).backward()
    assert torch.equal(y.grad, torch.tensor([6.0]))


def white_among_black(root: Path) -> Path:
    """24 black images and 2 white ones; with std 1e-30 a white image normalises to 1e30 and its
    batch's loss overflows, a black one to exactly 0: some steps go non-finite, the others train."""
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    for i in range(24):
        Image.fromarray(np.full((16, 16, 3), 255 if i in (5, 17) else 0, np.uint8)).save(root / "a" / f"{i:02d}.png")
    return root


def test_skipped_steps_are_counted_never_saved_and_resume_exactly(tmp_path):
    data = white_among_black(tmp_path / "images")
    common = dict(data=str(data), img_size=16, in_chans=3, mean=(0.0,) * 3, std=(1e-30,) * 3, batch_size=4,
                  epochs=2, log_every=1, save_every_steps=3, keep_last=10, nonfinite_skip_limit=10)
    full = tiny_mae_config(tmp_path / "full", **common)
    train(full)
    rows = read_metrics(full.output_dir)
    skipped_steps = [r["step"] for r in rows if "loss" not in r]
    assert len(rows) == 12 and 1 <= len(skipped_steps) <= 4, skipped_steps
    assert rows[-1]["nonfinite_skipped"] == len(skipped_steps)
    states = assert_all_checkpoints_finite(full.output_dir)
    assert states[-1]["nonfinite_skipped"] == len(skipped_steps)

    part = tiny_mae_config(tmp_path / "part", **common, max_steps=7)
    train(part)
    train(part.replace(resume="auto", max_steps=None))
    strip = [{k: v for k, v in r.items() if k != "images_per_sec"} for r in rows]
    again = [{k: v for k, v in r.items() if k != "images_per_sec"} for r in read_metrics(part.output_dir)]
    assert [str(r) for r in again] == [str(r) for r in strip]  # str: NaN grad norms compare equal
    wa, wb = states[-1]["model"], load_checkpoint(list_checkpoints(part.output_dir)[-1])["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # past the limit the run stops at the next non-finite step, naming the count and the last good checkpoint
    limited = tiny_mae_config(tmp_path / "limited", **{**common, "nonfinite_skip_limit": 1})
    with pytest.raises(NonFiniteError, match=f"^step {skipped_steps[1]} .*; 1 such steps were skipped and "
                                             "--nonfinite-skip-limit is 1; this update was not applied"):
        train(limited)
    assert all(not nonfinite_tensors(load_checkpoint(p)) for p in list_checkpoints(limited.output_dir))
