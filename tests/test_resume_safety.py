"""Resume never trains on a wrong state: unreadable checkpoints, a changed config or model, a finished
run, and logs that equal an uninterrupted run's after a SIGKILL (real runs and processes)."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_image_folder, read_metrics, tiny_mae_config
from sslab import main, train
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.errors import SslabError

TESTS = Path(__file__).parent


def labelled(tmp_path) -> str:
    """A train/test tree for the online k-NN monitor (it refuses a flat folder)."""
    for split in ("train", "test"):
        make_image_folder(tmp_path / "labelled" / split, n_per_class=4)
    return str(tmp_path / "labelled")


def small(tmp_path, image_folder, **changes):
    """24 images, batch 4: 6 steps per epoch."""
    return tiny_mae_config(tmp_path, data=str(image_folder), img_size=16, in_chans=3, mean=(0.5,) * 3,
                           std=(0.25,) * 3, batch_size=4, epochs=2, log_every=1, save_every_steps=2, keep_last=5,
                           model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 4}).replace(**changes)


def test_auto_resume_skips_a_truncated_newest_checkpoint_in_one_line(tmp_path, image_folder, caplog):
    cfg = small(tmp_path, image_folder, max_steps=4)
    train(cfg)
    two, four = list_checkpoints(cfg.output_dir)
    four.write_bytes(four.read_bytes()[: four.stat().st_size // 2])  # a node died mid-copy / mid-sync
    with caplog.at_level(logging.WARNING, logger="sslab"):
        out = train(cfg.replace(resume="auto", max_steps=5))
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"checkpoint {four} is unreadable (") and f"resuming from {two} (step 2)" in lines[0]
    assert out["step"] == 5 and [r["step"] for r in read_metrics(cfg.output_dir)] == [1, 2, 3, 4, 5]

    four.write_bytes(four.read_bytes()[:1000])  # rewritten by the resumed run: truncate it again
    with pytest.raises(SslabError, match=r"^--resume .*checkpoint-00000004.pt: the file is unreadable \(Pytorch"):
        train(cfg.replace(resume=str(four), max_steps=6))
    for p in list_checkpoints(cfg.output_dir):
        p.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(SslabError, match="every checkpoint in .* is unreadable"):
        train(cfg.replace(resume="auto", max_steps=6))


def test_resume_refuses_a_changed_run_before_compute_and_allows_free_fields(tmp_path, image_folder):
    cfg = small(tmp_path, image_folder, max_steps=2)
    train(cfg)
    config_json = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(SslabError) as info:
        train(cfg.replace(resume="auto", max_steps=3, mask_ratio=0.5, epochs=3,
                          model_kwargs={"depth": 3, "embed_dim": 64, "num_heads": 4}))
    msg = str(info.value)
    assert "\n" not in msg
    assert "epochs 2 -> 3" in msg and "mask_ratio 0.75 -> 0.5" in msg
    assert 'model_kwargs {"depth":2,"embed_dim":64,"num_heads":4} -> {"depth":3,"embed_dim":64,"num_heads":4}' in msg
    assert "another --output-dir" in msg and "--allow-config-change true" in msg
    assert (tmp_path / "run" / "config.json").read_text() == config_json  # nothing was touched
    assert [p.name for p in list_checkpoints(cfg.output_dir)] == ["checkpoint-00000002.pt"]

    # a different model, even when config changes are allowed, is named in one line, not a key dump
    with pytest.raises(SslabError, match=r"holds a different model than this run's \(\d+ tensors missing from the "
                                         r"checkpoint \(e.g. blocks.2"):
        train(cfg.replace(resume="auto", max_steps=3, allow_config_change=True,
                          model_kwargs={"depth": 3, "embed_dim": 64, "num_heads": 4}))
    with pytest.raises(SslabError, match="effective batch 4, this run has 8"):
        train(cfg.replace(resume="auto", max_steps=3, batch_size=8))

    # fields that do not change the optimisation may differ; an allowed change goes on from the checkpoint
    out = train(cfg.replace(resume="auto", max_steps=3, log_every=3, num_workers=1, keep_last=2,
                            monitor_every_epochs=5, monitor_data=labelled(tmp_path), wandb_tags=("x",)))
    assert out["step"] == 3
    out = train(cfg.replace(resume="auto", max_steps=4, mask_ratio=0.5, allow_config_change=True))
    assert out["step"] == 4 and load_checkpoint(list_checkpoints(cfg.output_dir)[-1])["config"]["mask_ratio"] == 0.5


def test_running_a_finished_recipe_again_says_so_in_one_line(tmp_path, image_folder, capsys):
    # The README's `python experiments/mae_demo.py --monitor-every-epochs 2` after the demo finished.
    base = small(tmp_path, image_folder, epochs=1, resume="auto", save_every_steps=100)
    main(base, [])
    capsys.readouterr()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    out = main(base, ["--monitor-every-epochs", "2", "--monitor-data", labelled(tmp_path)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert out["step"] == 6 and len(printed) == 1, printed
    assert "the run is already finished (step 6 of 6, checkpoint-00000006.pt); nothing to train" in printed[0]
    assert "another --output-dir" in printed[0]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics
    main(base, ["--max-steps", "3"])
    assert "at step 6 (checkpoint-00000006.pt) and --max-steps is 3; nothing to train" in capsys.readouterr().out


def comparable(rows):
    return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in rows]


def test_logs_after_a_sigkill_and_resume_equal_an_uninterrupted_run(tmp_path, image_folder):
    # 6 steps per epoch, 2 epochs, checkpoints at the epoch ends (6, 12): a kill after step 7 is logged
    # leaves rows past the newest checkpoint, which the resumed run logs again.
    from tiny_run import BASE

    full = BASE.replace(output_dir=str(tmp_path / "full"), data=str(image_folder), epochs=2, save_every_steps=100)
    train(full)
    for attempt in range(3):
        run = tmp_path / f"killed{attempt}"
        proc = subprocess.Popen([sys.executable, str(TESTS / "tiny_run.py"), "--output-dir", str(run), "--data",
                                 str(image_folder), "--epochs", "2", "--save-every-steps", "100"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        jsonl, deadline = run / "metrics.jsonl", time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            steps = [json.loads(x)["step"] for x in jsonl.read_text().splitlines()] if jsonl.exists() else []
            if steps and steps[-1] >= 7:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        saved = int(list_checkpoints(run)[-1].name[11:19])
        logged = [r["step"] for r in read_metrics(run)]
        if logged[-1] > saved:
            break
    else:
        pytest.fail("three kills all landed right after a checkpoint; the machine is too slow for this test")
    assert saved == 6 and 7 <= logged[-1] < 12, (saved, logged)
    train(full.replace(output_dir=str(run), resume="auto"))
    assert comparable(read_metrics(run)) == comparable(read_metrics(full.output_dir))
    csv_a = (run / "metrics.csv").read_text().splitlines()
    csv_b = (tmp_path / "full" / "metrics.csv").read_text().splitlines()
    assert csv_a[0] == csv_b[0] and [x.split(",")[:3] for x in csv_a] == [x.split(",")[:3] for x in csv_b]
    wa = load_checkpoint(list_checkpoints(full.output_dir)[-1])["model"]
    wb = load_checkpoint(list_checkpoints(run)[-1])["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
