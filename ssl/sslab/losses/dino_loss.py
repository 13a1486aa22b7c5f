"""The DINO loss: cross-entropy between a centred, sharpened teacher and the student (Caron et al. 2021, Eq. 1-4).

Signature and semantics are those of the official ``main_dino.DINOLoss``, so code written against it
carries over: ``DINOLoss(out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs,
nepochs, student_temp=0.1, center_momentum=0.9)`` and ``forward(student_output, teacher_output, epoch)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def teacher_temperature_schedule(warmup_teacher_temp: float, teacher_temp: float, warmup_teacher_temp_epochs: int,
                                 nepochs: int) -> np.ndarray:
    """(nepochs,) per-epoch tau_t: ``linspace(warmup, final, warmup_epochs)`` then constant (official)."""
    if not 0 <= warmup_teacher_temp_epochs <= nepochs:
        raise ValueError(f"warmup_teacher_temp_epochs {warmup_teacher_temp_epochs} must be between 0 and the "
                         f"number of epochs {nepochs}; lower it (e.g. --warmup-teacher-temp-epochs {nepochs})")
    return np.concatenate((np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
                           np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp))


class DINOLoss(nn.Module):
    """H(P_t(x), P_s(x')) averaged over every (global teacher view, other student view) pair.

    ``student_output``: (ncrops*B, out_dim), crop-major (the 2 global crops first);
    ``teacher_output``: (2*B, out_dim) for the 2 global crops. The teacher target is
    ``softmax((t - center) / tau_t[epoch])``, the student ``log_softmax(s / tau_s)``. Each call
    then moves ``center`` (1, out_dim) towards the teacher batch mean with momentum
    ``center_momentum``, the mean taken over every process (all-reduce when torch.distributed is
    initialised). ``center`` is a buffer, so it is in ``state_dict()``.

    Gradient accumulation: ``forward(..., update_center=False)`` only adds the teacher outputs to a
    running sum; :meth:`apply_accumulated_center` then makes one update with the mean over every
    micro-batch of the optimiser step (and every process), so k micro-batches of b images move the
    center exactly as one batch of k*b does in the official per-iteration update.
    """

    def __init__(self, out_dim: int, ncrops: int, warmup_teacher_temp: float, teacher_temp: float,
                 warmup_teacher_temp_epochs: int, nepochs: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        if ncrops < 2:
            raise ValueError(f"ncrops counts the 2 global crops plus the local ones; got {ncrops}")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        # teacher outputs of the micro-batches of the current optimiser step (empty between steps)
        self.register_buffer("pending_sum", torch.zeros(1, out_dim), persistent=False)
        self.pending_rows = 0
        # tau_t warms up: a high temperature early on makes training unstable (official comment)
        self.teacher_temp_schedule = teacher_temperature_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs)

    def teacher_probs(self, teacher_output: torch.Tensor, epoch: int) -> torch.Tensor:
        """(2B, out_dim) centred and sharpened teacher distribution, with the current (not yet updated) center."""
        temp = self.teacher_temp_schedule[epoch]
        return F.softmax((teacher_output - self.center) / temp, dim=-1)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: int,
                update_center: bool = True) -> torch.Tensor:
        """Scalar loss; updates the center now, or with ``update_center=False`` accumulates for
        :meth:`apply_accumulated_center` (see the class docstring)."""
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        teacher_out = self.teacher_probs(teacher_output, epoch).detach().chunk(2)

        total_loss = 0.0
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue  # the student and the teacher saw the same view
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss = total_loss + loss.mean()
                n_loss_terms += 1
        total_loss = total_loss / n_loss_terms
        if update_center:
            self.update_center(teacher_output)
        else:
            self.accumulate_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def accumulate_center(self, teacher_output: torch.Tensor) -> None:
        """Add a micro-batch's (rows, out_dim) teacher outputs to the step's running sum."""
        self.pending_sum += teacher_output.detach().sum(dim=0, keepdim=True).to(self.pending_sum.dtype)
        self.pending_rows += len(teacher_output)

    @torch.no_grad()
    def apply_accumulated_center(self) -> None:
        """One center update with the mean of everything accumulated since the last one, then reset."""
        if self.pending_rows == 0:
            return
        batch_center, n = self.pending_sum.clone(), self.pending_rows
        self.pending_sum.zero_()
        self.pending_rows = 0
        self._move_center(batch_center, n)

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of the teacher outputs over the global batch (Eq. 4)."""
        self._move_center(torch.sum(teacher_output, dim=0, keepdim=True), len(teacher_output))

    @torch.no_grad()
    def _move_center(self, batch_center: torch.Tensor, n: int) -> None:
        """center <- m * center + (1 - m) * sum / rows, sum and rows over every process."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            n *= dist.get_world_size()
        batch_center = batch_center / n
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)
