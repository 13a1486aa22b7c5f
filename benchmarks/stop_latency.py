"""Time from a stop signal to the exit of a training run, and the per-step cost of agreeing on it.

    python benchmarks/stop_latency.py --runs 8                       # SIGTERM/SIGUSR1 at random moments
    torchrun --nproc_per_node 2 benchmarks/stop_latency.py --flag-cost   # the per-step all-reduce (gloo)

Each run is the tests' tiny MAE (``tests/preempt_worker.py``, ViT depth 2, 28 px, batch 8) on the demo
set, signalled a random 0-1 s after its first logged step; reported: exit status, the step it stopped
after, the checkpoint it wrote, and seconds from the signal to the exit (the rest of the step plus one
checkpoint write plus the interpreter's exit). ``--flag-cost`` times the all-reduce of one int32 that
:class:`sslab.engine.preemption.StopSignals` runs every optimiser step.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "preempt_worker.py"


def one_run(out: Path, sig: int, delay: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(f"{out}.log", "w")
    proc = subprocess.Popen([sys.executable, str(WORKER), "--output-dir", str(out), "--max-steps", "200"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().strip()):
        if proc.poll() is not None:
            raise RuntimeError(Path(f"{out}.log").read_text()[-2000:])
        time.sleep(0.01)
    time.sleep(delay)
    t0 = time.monotonic()
    proc.send_signal(sig)
    saved = None  # when the stop line (printed after the checkpoint) appears
    while proc.poll() is None:
        if saved is None and "sslab: stopped by" in Path(f"{out}.log").read_text():
            saved = time.monotonic() - t0
        time.sleep(0.005)
    took = time.monotonic() - t0
    lines = [ln for ln in Path(f"{out}.log").read_text().splitlines() if ln.startswith("sslab: stopped by")]
    return {"signal": signal.Signals(sig).name, "delay_s": round(delay, 3), "exit": proc.returncode,
            "steps": len(metrics.read_text().splitlines()), "line": lines[0] if lines else None,
            "seconds_to_checkpoint_line": round(saved if saved is not None else took, 3),
            "seconds_to_exit": round(took, 3)}


def flag_cost(iters: int = 2000) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    flag = torch.zeros(1, dtype=torch.int32)
    for _ in range(100):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    dt = (time.perf_counter() - t0) / iters
    if dist.get_rank() == 0:
        print(f"stop-flag all-reduce (gloo, {dist.get_world_size()} processes): {dt * 1e6:.0f} us per step")
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flag-cost", action="store_true")
    args = p.parse_args()
    if args.flag_cost:
        return flag_cost()
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            sig = (signal.SIGTERM, signal.SIGUSR1)[i % 2]
            r = one_run(Path(tmp) / f"run{i}", sig, rng.uniform(0, 1))
            print(r, flush=True)
            results.append(r)
    ok = [r for r in results if r["exit"] == 75 and r["line"] and f"checkpoint-{r['steps']:08d}.pt" in r["line"]]
    t = [r["seconds_to_exit"] for r in results]
    c = [r["seconds_to_checkpoint_line"] for r in results]
    print(f"{len(ok)}/{len(results)} runs stopped with exit 75 and a checkpoint of the step they logged last; "
          f"signal to checkpoint line: median {statistics.median(c):.2f} s, max {max(c):.2f} s; "
          f"signal to exit: median {statistics.median(t):.2f} s, max {max(t):.2f} s")


if __name__ == "__main__":
    main()
