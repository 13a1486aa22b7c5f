"""Each method's own evaluation protocol, picked by default when the method of the encoder is known
(an sslab checkpoint or export records it; for an official release file pass ``--method``).

| method, encoder | linear-probe feature | BatchNorm before the head | source |
|---|---|---|---|
| DINO ViT-S (embed < 768) | ``last4``: class tokens of the last 4 blocks | no | DINO ``eval_linear.py``, ``n_last_blocks=4`` |
| DINO ViT-B and larger | ``last1+avg``: last class token + mean patch token | no | DINO README: ``--n_last_blocks 1 --avgpool_patchtokens true`` |
| MAE ViT | ``cls``: the class token | yes, ``BatchNorm1d(affine=False)`` | MAE Sec. A.2, ``main_linprobe.py`` |
| Swin (either method) | ``avg``: mean of the last stage | as the method | Swin has no class token |
| unknown method | ``cls`` (ViT) / ``avg`` (Swin) | yes | |

The augmented probe's recipe follows the method too (``mae``: LARS + BN + MAE's crop; ``dino``:
SGD + DINO's bilinear crop). k-NN always uses the class token (``avg`` for Swin), as DINO's ``eval_knn.py``.
"""

from __future__ import annotations

from timm.models.swin_transformer import SwinTransformer
from torch import nn

METHODS = ("mae", "dino")


def _is_swin(encoder: nn.Module) -> bool:
    return isinstance(encoder, SwinTransformer)


def _has_cls(encoder: nn.Module) -> bool:
    return getattr(encoder, "cls_token", None) is not None


def knn_feature(encoder: nn.Module) -> str:
    """DINO's k-NN feature: the class token (the mean of the last stage for Swin / class-token-free ViTs)."""
    return "cls" if not _is_swin(encoder) and _has_cls(encoder) else "avg"


def probe_feature(method: str | None, encoder: nn.Module) -> str:
    """The linear-probe feature of ``method``'s paper for this encoder (table in the module docstring)."""
    if _is_swin(encoder) or not _has_cls(encoder):
        return "avg"
    if method == "dino":
        return "last4" if encoder.embed_dim < 768 else "last1+avg"
    return "cls"


def probe_batch_norm(method: str | None) -> bool:
    """Whether the probe head sits on ``BatchNorm1d(affine=False)``: MAE yes, DINO no, unknown yes."""
    return method != "dino"


def probe_recipe(method: str | None) -> str:
    """The augmented probe recipe of ``method`` ('mae' when unknown)."""
    return "dino" if method == "dino" else "mae"
