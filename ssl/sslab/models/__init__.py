"""Models: encoders come from timm; these modules wrap them for each pretraining branch."""

from .mae import MaskedAutoencoderViT, create_mae
from .masking import random_masking

__all__ = ["MaskedAutoencoderViT", "create_mae", "random_masking"]
