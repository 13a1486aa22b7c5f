"""sslab: self-supervised pretraining of ViT and Swin encoders (MAE, DINO) on timm + accelerate.

Importing the package is light (no torch): ``Config`` and ``main`` are here at once, the models,
losses and engine are imported on first use, so a recipe's ``--help`` or a mistyped flag answers
without loading torch. A user's mistake (:class:`SslabError`) ends any entry point with one line.
"""

from __future__ import annotations

from typing import Any, Sequence

from .errors import SslabError, install_handler

install_handler()  # an uncaught SslabError prints "sslab: error: ..." and exits 2 (see sslab/errors.py)

from .config import Config, parse_args  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "DINOHead", "DINOLoss", "MaskedAutoencoderViT", "SslabError", "__version__", "create_mae",
           "export_encoder", "load_encoder", "main", "train"]

# name -> module that defines it; imported on first use (these import torch)
_LAZY = {"MaskedAutoencoderViT": "models.mae", "create_mae": "models.mae", "DINOLoss": "losses.dino_loss",
         "DINOHead": "models.dino_head", "train": "pretrain", "export_encoder": "export",
         "load_encoder": "export"}


def main(base: Config, argv: list[str] | None = None, hooks: Sequence[Any] = ()) -> dict[str, Any]:
    """Entry point of ``experiments/*.py``: command-line overrides on ``base``, checks, then
    :func:`sslab.pretrain.main` (training with the config's and ``hooks``' epoch-end work).

    ``--help`` and flag or config mistakes answer before torch is imported.
    """
    import sys

    from .checks import check_config

    doc = getattr(sys.modules.get("__main__"), "__doc__", None) or f"sslab {base.method} pretraining"
    cfg = parse_args(base, argv, description=doc.strip())
    check_config(cfg)
    from .pretrain import main as pretrain_main

    return pretrain_main(base, argv, hooks)  # parses the same argv again (cheap), into the same config


def __getattr__(name: str):
    """Heavy names are imported on first use; ``python -m sslab.export`` must also not find its module
    already imported by the package."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sslab' has no attribute {name!r}")
