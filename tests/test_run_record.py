"""A run folder that explains itself, and a console that shows progress without a terminal."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_batch_job_console_and_run_folder(tmp_path):
    # A real process with its output going to pipes (no TTY), as under sbatch or nohup.
    out_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    # Through the sslab command (python -m sslab train RECIPE = sslab train RECIPE = python RECIPE).
    cmd = [sys.executable, "-m", "sslab", "train", str(ROOT / "experiments" / "mae_demo.py"), "--output-dir", str(out_dir), "--max-steps", "4",
           "--log-every", "2", "--batch-size", "32", "--num-workers", "0", "--model-kwargs", '{"depth": 1}']
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    err = p.stderr
    assert "start: 4000 images, effective batch 32, lr 7.5e-05, 4 steps (125 per epoch)" in err
    assert "precision no, 1 process;" in err
    lines = [ln for ln in err.splitlines() if " step " in ln and "ETA" in ln]
    assert [ln.split("step ")[1].split(" ")[0] for ln in lines] == ["2/4", "4/4"], err[-2000:]
    assert "finished at step 4: this launch ran 4 steps in" in err and "images/s" in err
    assert "\r" not in err  # no progress bar redraws in a log file
    record = json.loads((out_dir / "run.json").read_text())["launches"]
    assert len(record) == 1
    launch = record[0]
    assert launch["command"] == shlex.join(cmd)
    assert launch["world_size"] == 1 and launch["host"] and launch["versions"]["torch"] and launch["versions"]["timm"]
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if git.returncode == 0:
        assert launch["git"]["commit"] == git.stdout.strip()
    console = (out_dir / "console.log").read_text()
    assert "start: 4000 images" in console and "ETA" in console and "finished at step 4" in console
