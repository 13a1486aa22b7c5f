"""sslab: self-supervised pretraining of ViT and Swin encoders (MAE, DINO) on timm + accelerate."""

from .models.mae import MaskedAutoencoderViT, create_mae

__version__ = "0.1.0"
__all__ = ["MaskedAutoencoderViT", "create_mae", "__version__"]

from .losses.dino_loss import DINOLoss  # noqa: E402
from .models.dino_head import DINOHead  # noqa: E402

__all__ += ["DINOLoss", "DINOHead"]

from .config import Config  # noqa: E402
from .pretrain import main, train  # noqa: E402

__all__ += ["Config", "main", "train"]

__all__ += ["export_encoder", "load_encoder"]


def __getattr__(name: str):
    """``sslab.export_encoder`` / ``sslab.load_encoder``, imported on first use so that
    ``python -m sslab.export`` does not find its module already imported by the package."""
    if name in ("export_encoder", "load_encoder"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'sslab' has no attribute {name!r}")
