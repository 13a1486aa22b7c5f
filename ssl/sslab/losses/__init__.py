"""Losses of the pretraining branches."""

from .mae_loss import mae_loss, patch_targets

__all__ = ["mae_loss", "patch_targets"]
