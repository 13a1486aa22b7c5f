"""launch/slurm.sbatch under a fake SLURM on CPU: two local tasks, the time-limit warning, a requeue, and
a second start that resumes the same run (same wandb run id) with every argument intact.

The fakes are shell scripts on PATH: ``sbatch`` runs the batch script as SLURM would (job id, node list,
``--open-mode``, a restart after ``scontrol requeue``), ``srun`` starts ``SLURM_NTASKS`` local tasks and
forwards signals to them, ``scontrol`` answers ``show hostnames`` and records ``requeue``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_preemption import STEPS, WORKER, free_port
from sslab.engine import list_checkpoints, load_checkpoint

SBATCH_SCRIPT = Path(__file__).parents[1] / "launch" / "slurm.sbatch"

FAKE_SBATCH = r"""#!/bin/bash
# sbatch SCRIPT ARGS...: run it as job 4242 on this host, again after each `scontrol requeue`.
export SLURM_JOB_ID=4242 SLURM_JOB_NODELIST=localhost SLURM_NNODES=1 SLURM_NODEID=0
export SLURM_NTASKS=$FAKE_TASKS SLURM_NTASKS_PER_NODE=$FAKE_TASKS
log="$FAKE_DIR/slurm-$SLURM_JOB_ID.out"
restarts=0
while true; do
  grep -q '^#SBATCH --open-mode=append' "$1" || : > "$log"   # SLURM's default truncates on each start
  SLURM_RESTART_COUNT=$restarts bash "$@" >> "$log" 2>&1 &
  echo $! > "$FAKE_DIR/batch.pid"
  wait $!
  rc=$?
  [[ -f $FAKE_DIR/requeued ]] || exit $rc
  rm "$FAKE_DIR/requeued"
  restarts=$((restarts + 1))
done
"""

FAKE_SRUN = r"""#!/bin/bash
# srun [options] CMD...: SLURM_NTASKS local tasks; signals forwarded to them; exit with the highest status.
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" &
  pids+=($!)
done
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
rc=0
for p in "${pids[@]}"; do
  while kill -0 "$p" 2>/dev/null; do wait "$p"; done
  wait "$p"
  r=$?
  ((r > rc)) && rc=$r
done
exit "$rc"
"""

FAKE_SCONTROL = r"""#!/bin/bash
echo "scontrol $*" >> "$FAKE_DIR/scontrol.calls"
case "$1 $2" in
  "show hostnames") echo localhost ;;
  "requeue $SLURM_JOB_ID") touch "$FAKE_DIR/requeued" ;;
  *) echo "fake scontrol: unexpected $*" >&2; exit 1 ;;
esac
"""


def test_warning_signal_checkpoints_requeues_and_the_next_start_resumes_the_same_run(tmp_path):
    fake = tmp_path / "slurm"
    (fake / "bin").mkdir(parents=True)
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake / "bin" / name).write_text(text)
        (fake / "bin" / name).chmod(0o755)
    run = tmp_path / "run"
    env = {**os.environ, "PATH": f"{fake / 'bin'}:{os.environ['PATH']}", "FAKE_DIR": str(fake), "FAKE_TASKS": "2",
           "MASTER_PORT": str(free_port()), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "SSLAB_TEST_STEP_SLEEP": "0.5", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    args = [WORKER, "--output-dir", str(run), "--model-kwargs", '{"depth": 2, "drop_path_rate": 0.1}',
            "--wandb-tags", "mae,run 2", "--wandb-mode", "offline"]
    job = subprocess.Popen(["sbatch", str(SBATCH_SCRIPT), *args], env=env)

    end = time.monotonic() + 300
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().strip()):
        assert job.poll() is None and time.monotonic() < end, (fake / "slurm-4242.out").read_text()[-3000:]
        time.sleep(0.05)
    os.kill(int((fake / "batch.pid").read_text()), signal.SIGUSR1)  # --signal=B:USR1@180: the batch shell only
    assert job.wait(600) == 0
    log = (fake / "slurm-4242.out").read_text()

    # Both starts are in the one log (--open-mode=append), the first checkpointed then requeued.
    assert "start 1," in log and "start 2," in log, log[-3000:]
    stop = re.search(r"sslab: stopped by SIGUSR1 after step (\d+): checkpoint (\S+); .*\(exit status 75\)", log)
    assert stop and log.count("sslab: stopped by") == 1, log[-3000:]
    k = int(stop.group(1))
    assert 1 <= k < STEPS and f"resumed from {run}/checkpoint-{k:08d}.pt at step {k}" in log, log[-3000:]
    assert log.index("requeueing job 4242") < log.index("start 2,")
    assert (fake / "scontrol.calls").read_text().splitlines().count("scontrol requeue 4242") == 1
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] == STEPS and "Traceback" not in log

    # Arguments arrived unsplit, and the second start logged to the same wandb run.
    config = json.loads((run / "config.json").read_text())
    assert config["model_kwargs"] == {"depth": 2, "drop_path_rate": 0.1} and config["wandb_tags"] == ["mae", "run 2"]
    assert config["world_size"] == 2
    run_id = (run / "wandb_id.txt").read_text().strip()
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(f"-{run_id}") for name in offline), (run_id, offline)
