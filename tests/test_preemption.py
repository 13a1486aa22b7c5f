"""Stop signals with real processes: the step finishes, one checkpoint, one line, exit 75 / 130, and
``--resume auto`` then gives bit-identical weights to an uninterrupted run."""

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from preempt_worker import worker_config
from sslab import train
from sslab.engine import list_checkpoints, load_checkpoint
from sslab.engine.preemption import INTERRUPT_EXIT, REQUEUE_EXIT
from sslab.engine.run_lock import LOCK_NAME

WORKER = str(Path(__file__).with_name("preempt_worker.py"))


def start(out: Path, *args: str, step_sleep: float = 0.0, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """The worker training into ``out`` (stdout and stderr into ``out``.log)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLAB_TEST_STEP_SLEEP": str(step_sleep)}
    log = open(f"{out}.log", "w")
    return subprocess.Popen([*(launcher or (sys.executable,)), WORKER, "--output-dir", str(out), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_for_training(out: Path, proc: subprocess.Popen, rows: int = 1, timeout: float = 120) -> None:
    """Block until the run has logged ``rows`` optimiser steps."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = out / "metrics.jsonl"
        if m.exists() and len(m.read_text().splitlines()) >= rows:
            return
        assert proc.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        time.sleep(0.05)
    raise TimeoutError(f"{out} did not start training")


def signal_and_wait(proc: subprocess.Popen, sig: int, timeout: float = 120) -> float:
    """Send ``sig``; seconds until the process exited."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout)
    return time.monotonic() - t0


def final_weights(run: Path) -> dict:
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["step"] == 12
    return {**state["model"], **{f"opt.{k}": v for k, v in state["optimizer"]["state"][0].items()}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted 12-step run, trained in this process."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(worker_config(run))
    return final_weights(run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_at_a_random_moment_then_resume_is_bit_identical(tmp_path, reference, sig):
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 1.0)  # steps take >= 0.1 s: 12 steps outlast it
    run = tmp_path / "run"
    proc = start(run, step_sleep=0.1)
    wait_for_training(run, proc)
    time.sleep(delay)
    took = signal_and_wait(proc, sig)
    out = Path(f"{run}.log").read_text()
    why = f"seed {seed}, delay {delay:.3f} s, exit after {took:.2f} s:\n{out[-2000:]}"
    assert proc.returncode == REQUEUE_EXIT, why
    lines = [line for line in out.splitlines() if line.startswith("sslab: stopped by")]
    stopped_at = len((run / "metrics.jsonl").read_text().splitlines())
    assert lines == [f"sslab: stopped by {sig.name} after step {stopped_at}: checkpoint "
                     f"{run}/checkpoint-{stopped_at:08d}.pt; the same command with --resume auto continues "
                     f"(exit status {REQUEUE_EXIT})"], why
    assert "Traceback" not in out and not (run / LOCK_NAME).exists(), why
    assert 1 <= stopped_at < 12 and took < 30, why
    train(worker_config(run).replace(resume="auto"))  # the requeued start
    resumed = final_weights(run)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference), why


def test_ctrl_c_saves_without_traceback_and_a_second_run_on_the_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    first = start(run, "--max-steps", "1000", step_sleep=0.3)
    wait_for_training(run, first)
    second = subprocess.run([sys.executable, WORKER, "--output-dir", str(run), "--resume", "auto"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert second.returncode != 0
    assert f"is in use by pid {first.pid} on host {socket.gethostname()} since " in second.stderr, second.stderr
    assert first.poll() is None  # the holder trains on, undisturbed
    took = signal_and_wait(first, signal.SIGINT)
    out = Path(f"{run}.log").read_text()
    assert first.returncode == INTERRUPT_EXIT, out[-2000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-2000:]
    assert len([line for line in out.splitlines() if line.startswith("sslab: stopped by SIGINT after step")]) == 1
    steps = len((run / "metrics.jsonl").read_text().splitlines())
    assert list_checkpoints(run)[-1].name == f"checkpoint-{steps:08d}.pt"
    assert not (run / LOCK_NAME).exists()  # released: the next start may go
    assert took < 30, took


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    run = tmp_path / "run"
    proc = start(run, "--max-steps", "1000", step_sleep=3.0)
    wait_for_training(run, proc)
    before = list_checkpoints(run)
    time.sleep(0.5)  # into the next (3 s) step
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    took = signal_and_wait(proc, signal.SIGINT)
    out = Path(f"{run}.log").read_text()
    assert proc.returncode == -signal.SIGINT, out[-2000:]
    assert "sslab: second interrupt: exiting now, without a checkpoint" in out and "Traceback" not in out, out
    assert took < 2.0, took  # did not finish the 3 s step
    assert list_checkpoints(run) == before and not (run / LOCK_NAME).exists()
