"""Epoch-end hooks: the engine's one extension point.

At the end of every epoch (after the log row, before the checkpoint) the engine calls each hook of
the list it was given with an :class:`EpochEnd`. A hook returns a dict of numbers to log at that
step (or None); it runs on every process, so a hook that evaluates on the main process only must
still return on the others (the engine logs from the main process). Hooks must leave training
unchanged: no gradient, the model's train mode restored, random streams forked.

The engine knows no hook by name: :func:`sslab.pretrain.epoch_hooks` builds the list from the config
(pictures, online k-NN), and a user adds their own with ``sslab.main(CONFIG, hooks=[my_hook])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch import nn


@dataclass(frozen=True)
class EpochEnd:
    """What a hook sees at the end of epoch ``epoch`` (1-based: epochs finished), optimiser step ``step``."""

    cfg: Any                # the run's sslab.Config (accum_iter resolved)
    model: nn.Module        # the unwrapped training model (MAE model, DINO student + head)
    branch: Any             # the method's branch (DINO keeps the teacher there)
    run_dir: Path           # the run folder
    epoch: int
    step: int
    is_main: bool           # only the main process writes files and logs
    logger: Any             # the run's RunLogger on the main process, else None (log_image, log)


EpochHook = Callable[[EpochEnd], Optional[dict]]


def run_epoch_hooks(hooks: Sequence[EpochHook], end: EpochEnd) -> dict[str, Any]:
    """Call each hook in order; returns the union of the rows they returned (later hooks win on a clash)."""
    row: dict[str, Any] = {}
    for hook in hooks:
        out = hook(end)
        if out:
            row.update(out)
    return row
