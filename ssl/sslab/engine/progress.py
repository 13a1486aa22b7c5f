"""What the console shows during training: a start summary, progress, and a closing summary.

On a terminal with ``--progress-bar true`` a tqdm bar. Otherwise (batch jobs, ``nohup``, a file, or
``--progress-bar false``), where tqdm would write a line per step or nothing at all, one log line
every ``log_every`` steps: step, epoch, loss, lr, images/s and the ETA. The start summary (dataset
size, effective batch, lr, steps, precision, processes) and the closing one (wall time, images/s)
are logged either way. Only the main process shows anything.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("sslab")


def format_duration(seconds: float) -> str:
    """``1h02m03s`` / ``4m05s`` / ``12s``."""
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Progress of one launch from ``start_step`` to ``last_step`` optimiser steps."""

    def __init__(self, cfg: Any, is_main: bool, start_step: int, last_step: int, images_per_step: int,
                 steps_per_epoch: int, stream: Any = None):
        stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self.is_main, self.start_step, self.last_step = is_main, start_step, last_step
        self.images_per_step, self.steps_per_epoch = images_per_step, steps_per_epoch
        self.bar = (tqdm(total=last_step, initial=start_step, dynamic_ncols=True, file=stream,
                         desc=f"{cfg.method} {cfg.model}") if is_main and cfg.progress_bar and tty else None)
        self.lines = is_main and self.bar is None
        self.t0 = time.perf_counter()
        self.step = start_step

    def start(self, dataset_size: int, effective_batch: int, lr: float, total_steps: int, precision: str,
              processes: int, run_dir: Any) -> None:
        """Log the start summary."""
        if not self.is_main:
            return
        resumed = f", resuming at step {self.start_step}" if self.start_step else ""
        log.info("start: %d images, effective batch %d, lr %.3g, %d steps (%d per epoch)%s, precision %s, "
                 "%d process%s; run folder %s", dataset_size, effective_batch, lr, self.last_step,
                 self.steps_per_epoch, resumed, precision, processes, "" if processes == 1 else "es", run_dir)
        if self.last_step < total_steps:
            log.info("stopping at step %d of the schedule's %d (max_steps)", self.last_step, total_steps)

    def update(self, n: int = 1) -> None:
        """``n`` optimiser steps done."""
        self.step += n
        if self.bar is not None:
            self.bar.update(n)

    def eta(self) -> float:
        """Seconds left, from this launch's mean step time."""
        done = self.step - self.start_step
        return (self.last_step - self.step) * (time.perf_counter() - self.t0) / done if done else float("nan")

    def row(self, row: dict[str, Any]) -> None:
        """Show a log row: the bar's postfix, or a line with the ETA."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        elif self.lines:
            log.info("step %d/%d (epoch %.2f): loss %.4f, lr %.3g, %.0f img/s, ETA %s", self.step, self.last_step,
                     self.step / self.steps_per_epoch, row["loss"], row["lr"], row.get("images_per_sec", 0.0),
                     format_duration(self.eta()))

    def close(self) -> dict[str, float]:
        """Close the bar and log the closing summary; returns ``{"wall_seconds", "images_per_sec"}``."""
        if self.bar is not None:
            self.bar.close()
        wall = time.perf_counter() - self.t0
        rate = (self.step - self.start_step) * self.images_per_step / wall if wall > 0 else 0.0
        if self.is_main:
            log.info("finished at step %d: this launch ran %d steps in %s, %.1f images/s", self.step,
                     self.step - self.start_step, format_duration(wall), rate)
        return {"wall_seconds": wall, "images_per_sec": rate}
