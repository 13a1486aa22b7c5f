"""Each method's own defaults for the settings that all methods share.

``Config``'s defaults are the MAE paper's (betas (0.9, 0.95), no minimum lr, constant weight decay, ...).
A DINO run that leaves such a field unset should get DINO's value instead, the official
``main_dino.py`` default (facebookresearch/dino, ``get_args_parser``; its fields that only DINO has are
``Config``'s defaults already). :func:`apply_method_defaults` fills them in for the fields nobody set:
neither the command line nor the recipe (a recipe's field still at ``Config``'s default counts as unset).
Kept out: ``main_dino.py``'s ``--use_fp16 true`` (``mixed_precision`` stays "no", which runs anywhere).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from .config import Config

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "mae": {},  # Config's own defaults are MAE's
    "dino": {
        "epochs": 100,
        "base_lr": 0.0005,                    # x batch / 256, as main_dino.py
        "min_lr": 1e-6,
        "warmup_epochs": 10,
        "weight_decay": 0.04,
        "weight_decay_end": 0.4,              # cosine 0.04 -> 0.4
        "betas": (0.9, 0.999),                # torch.optim.AdamW's defaults, which main_dino.py uses
        "clip_grad": 3.0,
        "clip_grad_mode": "per_param",        # utils.clip_gradients
        "model_kwargs": {"drop_path_rate": 0.1},
    },
}


def _class_default(name: str) -> Any:
    f = next(f for f in dataclasses.fields(Config) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def apply_method_defaults(cfg: Config, given: Iterable[str] = ()) -> Config:
    """``cfg`` with its method's defaults in every field of :data:`METHOD_DEFAULTS` that is still at
    ``Config``'s default and not in ``given`` (the fields set on the command line)."""
    given = set(given)
    changes = {name: value for name, value in METHOD_DEFAULTS.get(cfg.method, {}).items()
               if name not in given and getattr(cfg, name) == _class_default(name)}
    return cfg.replace(**changes) if changes else cfg
