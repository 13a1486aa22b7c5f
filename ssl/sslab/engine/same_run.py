"""Is a resume the same run? The new config against the checkpoint's, before anything is computed.

Every recipe resumes by default (``resume="auto"``), so a second experiment pointed at the same
``--output-dir`` would otherwise chain silently onto the first. Fields in
``config.FREE_ON_RESUME`` may differ; any other difference stops with one line listing each
changed field as ``old -> new`` and the two ways out.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from ..config import EFFECTIVE_BATCH_FIELDS, FREE_ON_RESUME, Config
from ..errors import SslabError

MISSING = "<not set>"  # a field the checkpoint's sslab version did not have yet, with a non-default value


def _show(v: Any) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else repr(v)


def config_changes(old: dict[str, Any], new: Config) -> list[tuple[str, Any, Any]]:
    """``(field, old, new)`` for every field that differs and is neither free nor an effective-batch
    factor. ``old`` is a checkpoint's ``config`` dict (JSON types: tuples are lists there)."""
    new_d = new.to_dict()
    defaults = Config().to_dict()
    changes = []
    for f in dataclasses.fields(Config):
        name = f.name
        if name in FREE_ON_RESUME or name in EFFECTIVE_BATCH_FIELDS:
            continue
        before = old.get(name, defaults[name])  # older checkpoints: a new field had its default then
        if before != new_d[name]:
            changes.append((name, before if name in old else MISSING, new_d[name]))
    return changes


def check_same_run(old: dict[str, Any], new: Config, path: str | Path) -> None:
    """Raise one-line :class:`SslabError` when ``new`` changes the optimisation of the run saved at ``path``
    (unless ``new.allow_config_change``)."""
    changes = config_changes(old, new)
    if not changes or new.allow_config_change:
        return
    listed = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in changes)
    raise SslabError(
        f"{new.output_dir} holds another run ({path}); this one changes {listed}; start a new run with another "
        "--output-dir, or continue that run with the new values with --allow-config-change true"
    )


def check_effective_batch(saved: int, now: int, path: str | Path) -> None:
    """The effective batch sets the lr and the schedule's length: a resume must keep it."""
    if saved != now:
        raise SslabError(
            f"{path} was trained with effective batch {saved}, this run has {now} (batch_size x accum_iter x "
            "processes); resume with the same effective batch (--effective-batch-size keeps it on any process "
            "count) or start a new run with another --output-dir"
        )


def load_model_state(model: nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state)``, with a one-line error naming the difference instead of a key dump."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("tensors missing from the checkpoint", missing), ("unexpected tensors", unexpected),
                  ("shape mismatches (checkpoint vs model)", shapes)) if v]
        raise SslabError(
            f"{path} holds a different model than this run's ({'; '.join(parts)}); use the checkpoint's "
            "--model/--model-kwargs, or start a new run with another --output-dir"
        )
    model.load_state_dict(state)


def finished_message(cfg: Config, path: str | Path, step: int, last_step: int, total_steps: int) -> str:
    """The one line a resume prints when its checkpoint is already at (or past) the last step."""
    if last_step < total_steps:
        return (f"{cfg.output_dir}: the run is at step {step} ({Path(path).name}) and --max-steps is {cfg.max_steps}; "
                "nothing to train; raise --max-steps (or clear it with none) to continue it")
    return (f"{cfg.output_dir}: the run is already finished (step {step} of {total_steps}, {Path(path).name}); "
            "nothing to train; for a new run with these settings use another --output-dir")
