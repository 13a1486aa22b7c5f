"""sslab: self-supervised pretraining of ViT and Swin encoders (MAE, DINO) on timm + accelerate."""

from .models.mae import MaskedAutoencoderViT, create_mae

__version__ = "0.1.0"
__all__ = ["MaskedAutoencoderViT", "create_mae", "__version__"]

from .config import Config  # noqa: E402
from .engine import main, train  # noqa: E402

__all__ += ["Config", "main", "train"]
