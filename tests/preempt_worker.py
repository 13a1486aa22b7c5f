"""A tiny MAE run for the preemption, lock and SLURM tests, alone or under torchrun / srun (not collected).

``SSLAB_TEST_STEP_SLEEP=s`` makes every micro-batch take ``s`` seconds longer (a sleep in the loss),
so a test can signal a run in the middle of a step.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_mae_config  # noqa: E402
from sslab import main  # noqa: E402
from sslab.branches import MAEBranch  # noqa: E402


def worker_config(output_dir: str | Path = "run"):
    """The run this script trains (6 steps of 8 images): tests build the uninterrupted reference from it."""
    return tiny_mae_config(Path("."), epochs=1, max_steps=6, batch_size=8, warmup_epochs=0, base_lr=0.02,
                           save_every_steps=4, keep_last=10).replace(output_dir=str(output_dir))


if __name__ == "__main__":
    pause = float(os.environ.get("SSLAB_TEST_STEP_SLEEP", "0"))
    if pause:
        loss = MAEBranch.loss

        def slow_loss(self, *args, **kwargs):
            time.sleep(pause)
            return loss(self, *args, **kwargs)

        MAEBranch.loss = slow_loss
    main(worker_config(), sys.argv[1:])
