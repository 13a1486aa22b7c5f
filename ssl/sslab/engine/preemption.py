"""Stop a run cleanly on SIGTERM, SIGUSR1 or SIGINT: finish the step, agree, save once, exit "requeue me".

SIGTERM is what ``scancel``, SLURM preemption and a time limit send; SIGUSR1 is SLURM's early
warning (``--signal=B:USR1@180`` in ``launch/slurm.sbatch``); SIGINT is Ctrl-C. On any of them the
handler only records the signal. The engine asks :meth:`StopSignals.agreed` once per optimiser step;
that is one all-reduce (max) of one integer over a CPU (gloo) group, so it costs no GPU sync, and a
signal that reached only some processes stops all of them after the same step. The engine then
writes one checkpoint collectively and :meth:`StopSignals.exit` prints one line and raises
:class:`RunStopped`.

Bound: from the signal to the exit, at most the rest of the current optimiser step (with its
end-of-epoch work, if the step ends an epoch) plus one checkpoint write.

Exit status: :data:`REQUEUE_EXIT` (75, ``EX_TEMPFAIL`` of sysexits.h: "try again") after SIGTERM or
SIGUSR1, :data:`INTERRUPT_EXIT` (130, as shells report Ctrl-C) after SIGINT; ``launch/slurm.sbatch``
requeues the job on 75. A second Ctrl-C exits at once (killed by SIGINT), without a checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

REQUEUE_EXIT = 75
INTERRUPT_EXIT = 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class RunStopped(SystemExit):
    """Raised by the engine after the checkpoint of a stop signal; its ``code`` is the exit status."""


def stop_group() -> Any:
    """A process group for the stop flag: the default one if it is gloo, else a new gloo group.

    gloo keeps the flag on the CPU, so checking it every step never waits for the GPU. Every
    process must call this at the same point (creating a group is collective). None when alone.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


class StopSignals:
    """Context manager: record SIGTERM/SIGUSR1/SIGINT while a run trains, restore the old handlers after.

    ``received`` is the first signal's number (0: none). Only the process that installed the
    handlers acts on them: forked DataLoader workers inherit the handler and ignore the signal
    (the main process shuts them down).
    """

    def __init__(self) -> None:
        self.received = 0
        self.on_abort: list[Callable[[], None]] = []  # run before a second Ctrl-C kills the process
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()
        self._group: Any = None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal.signal only works there
            self._pid = os.getpid()
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:
            return
        if signum == signal.SIGINT and self.received:
            # Second Ctrl-C (or Ctrl-C after SIGTERM): the user does not want to wait for the save.
            os.write(2, b"sslab: second interrupt: exiting now, without a checkpoint\n")
            for fn in self.on_abort:
                try:
                    fn()
                except Exception:  # nothing may delay the exit
                    pass
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return
        # A repeated SIGTERM (the launcher forwarding what SLURM also sent directly) changes nothing.
        self.received = self.received or signum

    def attach(self) -> None:
        """Create the group the flag is reduced over; call on every process after the process group exists."""
        self._group = stop_group()

    def agreed(self) -> int:
        """The signal every process agrees to stop on (0: go on). Collective: call on every process."""
        if self._group is None:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())

    def exit(self, signum: int, step: int, checkpoint: Path | None, main: bool) -> None:
        """Print the one line (main process) and raise :class:`RunStopped` with the exit status."""
        code = INTERRUPT_EXIT if signum == signal.SIGINT else REQUEUE_EXIT
        if main:
            where = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint (nothing trained yet)"
            print(f"sslab: stopped by {signal.Signals(signum).name} after step {step}: {where}; the same command "
                  f"with --resume auto continues (exit status {code})", file=sys.stderr, flush=True)
        raise RunStopped(code)
