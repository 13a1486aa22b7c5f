"""Non-finite losses and gradients: caught before the optimiser step, never applied, never saved.

Per micro-batch the loss is folded into the backward pass: a non-finite loss multiplies its own
gradient by NaN (``poison``), so the gradients of every process (DDP averages them) turn non-finite
and all processes take the same decision from the same global gradient norm. Per optimiser step
there is one device sync: the total gradient norm (which the clipping needs anyway), with the
loss flag read in the same transfer. A bad step is then either refused (``nonfinite_skip_limit`` 0,
the default: stop, naming the step, the last good checkpoint and why) or skipped and counted, as
fp16 loss scaling does, until the limit is passed.

fp16: accelerate's GradScaler already skips steps whose *gradients* overflow (that is how it finds
its scale) and must see every step to update its scale, so under fp16 only a non-finite *loss*
(the forward pass itself overflowed, which no scale fixes) counts here; the step is still handed to
the scaler, which skips it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SslabError
from .checkpoint import list_checkpoints


class NonFiniteError(SslabError, FloatingPointError):
    """A non-finite loss or gradient the run may not skip; one line, raised before the update."""


def poison(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` with the same value, whose gradient is NaN when ``loss`` is not finite (no sync).

    ``loss * 1`` is bit-identical to ``loss`` and passes the gradient unchanged; ``loss * nan``
    makes every gradient NaN, so the bad micro-batch cannot hide in an accumulated or averaged
    gradient (a huge-but-finite prediction can give an ``inf`` squared error with finite gradients).
    """
    return loss * torch.where(torch.isfinite(loss.detach()), 1.0, math.nan).to(loss.dtype)


def nonfinite_grads(named_params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[str], int]:
    """Names of parameters whose gradient holds a NaN/inf, and how many parameters have gradients."""
    bad, total = [], 0
    for name, p in named_params:
        if p.grad is None:
            continue
        total += 1
        if not bool(torch.isfinite(p.grad).all()):
            bad.append(name)
    return bad, total


def nonfinite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Dotted paths of floating-point tensors with a NaN/inf anywhere in a nested checkpoint ``state``."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    return [bad for k, v in items for bad in nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]


def _names(names: list[str], shown: int = 3) -> str:
    more = f", ... and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def last_good_checkpoint(run_dir: str | Path) -> str:
    """The newest checkpoint of the run, or a phrase saying there is none yet."""
    ckpts = list_checkpoints(run_dir)
    return str(ckpts[-1]) if ckpts else f"none in {run_dir} yet"


class NonFiniteGuard:
    """Decides, once per optimiser step, whether its update may be applied.

    ``skip_limit`` 0 stops at the first non-finite step; ``skip_limit`` N skips up to N of them over
    the whole run (the count is saved in checkpoints) and stops at the next. ``scaler_active``: fp16
    loss scaling owns gradient overflows (see the module docstring).
    """

    def __init__(self, skip_limit: int, scaler_active: bool, device: torch.device, skipped: int = 0):
        self.skip_limit = skip_limit
        self.scaler_active = scaler_active
        self.skipped = skipped
        self._loss_bad = torch.zeros((), device=device)   # 1 once a micro-batch of this step had a bad loss
        self._bad_loss = torch.zeros((), device=device)   # that loss (nan / inf / -inf)

    def watch(self, loss: torch.Tensor) -> torch.Tensor:
        """Record whether this micro-batch's loss is finite (on the device) and return it poisoned."""
        bad = ~torch.isfinite(loss.detach().float())
        self._loss_bad = torch.maximum(self._loss_bad, bad.float())
        self._bad_loss = torch.where(bad, loss.detach().float(), self._bad_loss)
        return poison(loss)

    def clip_and_check(self, grads_of: list[nn.Parameter], max_norm: float) -> tuple[torch.Tensor, bool, str]:
        """Total L2 gradient norm (clipped to ``max_norm`` when finite) and whether the step is good.

        Call after ``accelerator.unscale_gradients()``. One device sync. Returns ``(norm, ok, why)``;
        ``why`` is empty when ok. Gradients are not clipped when the norm is not finite, so the
        caller can still name the offending parameters.
        """
        grads = [p.grad for p in grads_of if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, 2.0)
        total, loss_bad, bad_loss = torch.stack([norm.float(), self._loss_bad, self._bad_loss]).tolist()
        self._loss_bad.zero_()
        if loss_bad:
            return norm, False, f"the loss is {bad_loss}"
        if not math.isfinite(total):
            return norm, False, ""  # gradients: named by the caller (it knows the parameter names)
        if math.isfinite(max_norm):
            torch.nn.utils.clip_grads_with_norm_(grads_of, max_norm, norm)
        return norm, True, ""

    def on_bad_step(self, why: str, named_params: Iterable[tuple[str, nn.Parameter]], step: int, epoch: int,
                    run_dir: str | Path, lr: float) -> bool:
        """Count a bad step, or raise :class:`NonFiniteError`. Returns True when the caller must still
        call ``optimizer.step()`` (fp16: the GradScaler skips it and lowers its scale)."""
        if not why:
            bad, total = nonfinite_grads(named_params)
            if self.scaler_active:
                return True  # gradient overflow under fp16: the scaler's own business, not counted
            why = (f"the gradients of {len(bad)} of {total} parameters are not finite ({_names(bad)})" if bad
                   else "the total gradient norm overflows (finite gradients whose squares exceed float32)")
        self.skipped += 1
        if self.skipped <= self.skip_limit:
            return self.scaler_active
        limit = (f"{self.skipped - 1} such steps were skipped and --nonfinite-skip-limit is {self.skip_limit}; "
                 if self.skip_limit else "")
        raise NonFiniteError(
            f"step {step + 1} (epoch {epoch}): {why}; {limit}this update was not applied and nothing after it was "
            f"saved, last good checkpoint: {last_good_checkpoint(run_dir)}; lower the lr (now {lr:.3g}), check "
            "the data, use bf16 instead of fp16, or skip such steps with --nonfinite-skip-limit N"
        )


def refuse_nonfinite(state: dict[str, Any], step: int, run_dir: str | Path) -> None:
    """Raise before a checkpoint holding a NaN/inf tensor is written (the last line of defence: an
    update with finite gradients can still overflow a weight or an optimiser moment)."""
    bad = nonfinite_tensors(state)
    if bad:
        raise NonFiniteError(
            f"step {step}: refusing to save a checkpoint with {len(bad)} non-finite tensors ({_names(bad)}); "
            f"last good checkpoint: {last_good_checkpoint(run_dir)}; lower the lr or check the data"
        )
