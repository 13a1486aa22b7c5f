"""Training engine: accelerate setup, loop, checkpoints, logging."""

from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .train import main, train

__all__ = ["list_checkpoints", "load_checkpoint", "main", "save_checkpoint", "train"]
