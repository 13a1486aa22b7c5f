"""Stop signals with real processes: the step finishes, one checkpoint, one line, exit 75 / 130, and
``--resume auto`` then gives bit-identical weights to an uninterrupted run (alone and under torchrun)."""

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
from sslab.errors import SslabError

WORKER = str(Path(__file__).with_name("preempt_worker.py"))
STEPS = worker_config().max_steps


def start(out: Path, *args: str, step_sleep: float = 0.0, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """The worker training into ``out`` (stdout and stderr into ``out``.log)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLAB_TEST_STEP_SLEEP": str(step_sleep)}
    log = open(f"{out}.log", "w")
    return subprocess.Popen([*(launcher or (sys.executable,)), WORKER, "--output-dir", str(out), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def log_of(out: Path) -> str:
    return Path(f"{out}.log").read_text()


def steps_logged(out: Path) -> int:
    m = out / "metrics.jsonl"
    return len(m.read_text().splitlines()) if m.exists() else 0


def wait_for_training(out: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Block until the run has logged its first optimiser step."""
    end = time.monotonic() + timeout
    while steps_logged(out) < 1:
        assert proc.poll() is None and time.monotonic() < end, log_of(out)[-3000:]
        time.sleep(0.05)


def signal_and_wait(proc: subprocess.Popen, sig: int, timeout: float = 300) -> float:
    """Send ``sig``; seconds until the process exited."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout)
    return time.monotonic() - t0


def final_state(run: Path) -> dict:
    """Weights and AdamW moments of the last checkpoint, which must be the run's last step."""
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["step"] == STEPS
    return {**state["model"], **{f"opt{i}.{k}": v for i, s in state["optimizer"]["state"].items()
                                 for k, v in s.items()}}


def assert_stopped_once(out: Path, sig: signal.Signals, code: int) -> int:
    """The run logged one stop line for ``sig`` naming the checkpoint of the step it stopped after."""
    stopped_at = steps_logged(out)
    lines = [line for line in log_of(out).splitlines() if line.startswith("sslab: stopped by")]
    assert lines == [f"sslab: stopped by {sig.name} after step {stopped_at}: checkpoint "
                     f"{out}/checkpoint-{stopped_at:08d}.pt; the same command with --resume auto continues "
                     f"(exit status {code})"], log_of(out)[-2000:]
    assert "Traceback" not in log_of(out) and not (out / LOCK_NAME).exists()
    return stopped_at


def test_sigterm_and_sigusr1_at_random_moments_then_resume_is_bit_identical(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    delays = {sig: rng.uniform(0, 0.6) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    runs = {sig: tmp_path / sig.name for sig in delays}
    procs = {sig: start(runs[sig], step_sleep=0.3) for sig in delays}  # steps >= 0.3 s: 5 outlast 0.6 s
    first, sent, exited = {}, {}, {}
    end = time.monotonic() + 600
    while len(exited) < len(procs):  # each run is signalled its delay after its own first logged step
        now = time.monotonic()
        assert now < end, {sig: log_of(run)[-1000:] for sig, run in runs.items()}
        for sig, proc in procs.items():
            if sig not in first and steps_logged(runs[sig]) >= 1:
                first[sig] = now
            if sig in first and sig not in sent and now >= first[sig] + delays[sig]:
                assert proc.poll() is None, log_of(runs[sig])[-2000:]
                proc.send_signal(sig)
                sent[sig] = now
            if sig in sent and sig not in exited and proc.poll() is not None:
                exited[sig] = now
        time.sleep(0.005)
    train(worker_config(tmp_path / "reference"))  # uninterrupted, in this process
    reference = final_state(tmp_path / "reference")
    for sig, run in runs.items():
        took = exited[sig] - sent[sig]
        why = f"seed {seed}, {sig.name} {delays[sig]:.3f} s after the first step, exit {took:.2f} s later"
        assert procs[sig].returncode == REQUEUE_EXIT, (why, log_of(run)[-2000:])
        assert 1 <= assert_stopped_once(run, sig, REQUEUE_EXIT) < STEPS, why
        assert took < 60, why
        train(worker_config(run).replace(resume="auto"))  # the requeued start
        resumed = final_state(run)
        assert all(torch.equal(reference[k], resumed[k]) for k in reference), why


def test_ctrl_c_saves_without_traceback_a_second_exits_at_once_and_a_busy_folder_is_refused(tmp_path):
    first, patient = tmp_path / "first", tmp_path / "patient"
    one = start(first, "--max-steps", "1000", step_sleep=0.3)
    two = start(patient, "--max-steps", "1000", step_sleep=4.0)
    wait_for_training(first, one)
    with pytest.raises(SslabError, match=f"is in use by pid {one.pid} on host {socket.gethostname()} since "):
        train(worker_config(first).replace(resume="auto"))  # a second run (this process) on the same folder
    assert one.poll() is None  # the holder trains on, undisturbed

    took = signal_and_wait(one, signal.SIGINT)
    assert one.returncode == INTERRUPT_EXIT, log_of(first)[-2000:]
    stopped_at = assert_stopped_once(first, signal.SIGINT, INTERRUPT_EXIT)
    assert "KeyboardInterrupt" not in log_of(first) and list_checkpoints(first)[-1].name == f"checkpoint-{stopped_at:08d}.pt"
    assert took < 60, took

    wait_for_training(patient, two)
    saved = list_checkpoints(patient)
    time.sleep(0.5)  # into the next 4 s step
    two.send_signal(signal.SIGINT)
    time.sleep(0.3)
    took = signal_and_wait(two, signal.SIGINT)
    assert two.returncode == -signal.SIGINT, log_of(patient)[-2000:]
    assert "sslab: second interrupt: exiting now, without a checkpoint" in log_of(patient)
    assert "Traceback" not in log_of(patient)
    assert took < 3.0, took  # it did not finish the 4 s step
    assert list_checkpoints(patient) == saved and not (patient / LOCK_NAME).exists()


def worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of the processes torchrun started."""
    pids = {}
    for child in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{child}/environ").read_text().split("\0") if "=" in kv)
        pids[int(env["RANK"])] = int(child)
    return pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_to_one_rank_under_torchrun_stops_both_and_resume_is_bit_identical(tmp_path):
    def torchrun():
        return (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()))

    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0, 0.6)
    run, ref = tmp_path / "run", tmp_path / "reference"
    reference = start(ref, launcher=torchrun())  # uninterrupted, meanwhile
    proc = start(run, step_sleep=0.3, launcher=torchrun())
    wait_for_training(run, proc)
    time.sleep(delay)
    t0 = time.monotonic()
    os.kill(worker_pids(proc)[1], signal.SIGTERM)  # only rank 1 hears it
    proc.wait(300)
    took = time.monotonic() - t0
    why = f"seed {seed}, SIGTERM to rank 1 {delay:.3f} s after the first step, torchrun exited {took:.2f} s later"
    out = log_of(run)
    assert "exitcode  : 75" in out and out.count("sslab: stopped by SIGTERM") == 1, (why, out[-3000:])
    stopped_at = steps_logged(run)
    assert 1 <= stopped_at < STEPS and list_checkpoints(run)[-1].name == f"checkpoint-{stopped_at:08d}.pt", why
    resumed = start(run, "--resume", "auto", launcher=torchrun())
    assert resumed.wait(300) == 0 and reference.wait(300) == 0, log_of(run)[-3000:]
    a, b = final_state(ref), final_state(run)
    assert all(torch.equal(a[k], b[k]) for k in a), why
