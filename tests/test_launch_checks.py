"""Launcher checks: whose precision wins, accelerate's one-process CPU launch, and the run-directory lock's
take-over rules (dead holder on this host, earlier start of the same SLURM job)."""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_mae_config
from sslab.engine.distributed import make_accelerator, resolve_precision
from sslab.engine.train import train
from sslab.engine.run_lock import LOCK_NAME, RunLock, this_holder
from sslab.errors import SslabError

WORKER = str(Path(__file__).with_name("preempt_worker.py"))


@pytest.mark.parametrize("launcher, recipe, used", [(None, "bf16", "bf16"), ("no", "bf16", "bf16"),
                                                    ("bf16", "no", "bf16"), ("BF16", "no", "bf16")])
def test_the_launchers_reduced_precision_wins_over_the_recipes(monkeypatch, launcher, recipe, used):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    if launcher is not None:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    assert resolve_precision(recipe)[0] == used


def test_precision_used_is_logged_at_start(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    acc = make_accelerator("no")
    assert acc.mixed_precision == "bf16"
    note = "precision: bf16 (from the launcher's ACCELERATE_MIXED_PRECISION=bf16; the recipe says no)"
    assert acc.precision_note == note
    with caplog.at_level(logging.INFO, logger="sslab"):  # a run logs it at its start
        train(tiny_mae_config(tmp_path, max_steps=1))
    assert note in caplog.text
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    with pytest.raises(SslabError, match="the launcher asked for mixed precision 'fp8'"):
        make_accelerator("no")


def test_accelerate_cpu_launch_of_two_processes_is_refused(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    out = subprocess.run([str(accelerate), "launch", "--cpu", "--num_processes", "2", "--main_process_port", "0",
                          WORKER, "--output-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    assert ("accelerate launch was asked for several processes but started only this one (with --cpu and no "
            "--multi_cpu it runs a single process); on CPU run `torchrun --nproc_per_node N experiments/...`"
            in out.stderr), out.stderr[-3000:]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def write_lock(run: Path, **holder) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).write_text(json.dumps({**this_holder(), "started": "2026-01-01 00:00:00 UTC", **holder}))


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    write_lock(tmp_path, pid=dead_pid(), proc_start=None)
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_live_process_or_another_host_is_refused_naming_it(tmp_path):
    parent = os.getppid()  # alive
    write_lock(tmp_path, pid=parent, proc_start=None)
    with pytest.raises(SslabError, match=f"is in use by pid {parent} on host {socket.gethostname()} since "
                                         "2026-01-01 00:00:00 UTC"):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, pid=dead_pid(), host="node-7")  # cannot tell whether it runs there
    with pytest.raises(SslabError, match="in use by pid .* on host node-7 .*delete that lock file if the run is gone"):
        RunLock(tmp_path).acquire()


def test_a_requeued_slurm_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    write_lock(tmp_path, pid=os.getppid(), host="node-7", slurm_job_id="4242", slurm_restart_count="0")
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["slurm_restart_count"] == "1"
    write_lock(tmp_path, pid=os.getppid(), host="node-7", slurm_job_id="999", slurm_restart_count="0")
    with pytest.raises(SslabError, match="node-7"):  # another job's lock still counts
        RunLock(tmp_path).acquire()
