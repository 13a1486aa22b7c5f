"""Pretraining branches: each turns a batch of views into a loss for the engine.

A branch is a plain object with ``model`` (the trainable nn.Module the engine optimises; it stays
unwrapped, while the ``model`` argument of the hooks below may be DDP-wrapped),
``transform(source)`` (the per-sample augmentation in the loader; ``source`` lets it choose the
in-memory, device-cropped path), ``views(batch)`` (the batch's views on the device), ``setup(device, steps_per_epoch)`` (called once the
engine has prepared ``model``: move extra modules, build per-step schedules), ``no_weight_decay()``, ``loss(model, batch, epoch, step)``
-> ``(loss, metrics)`` (``batch`` is ``[views on the device, labels, sample indices, skip counts]``,
the last three on the CPU), ``before_step(model, step, epoch)`` (gradients are unscaled and
clipped; e.g. freeze a layer), ``after_step(model, step)`` (e.g. EMA teacher) and ``state_dict()/load_state_dict()`` for any state
outside the model and optimiser. ``BRANCHES`` maps ``Config.method`` to its constructor.
"""

from .dino import DINOBranch
from .mae import MAEBranch

BRANCHES = {"mae": MAEBranch, "dino": DINOBranch}

__all__ = ["BRANCHES", "DINOBranch", "MAEBranch"]
