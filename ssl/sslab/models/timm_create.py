"""``timm.create_model`` with the user's mistakes (a misspelled name or keyword) as one-line errors."""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any

import timm
from torch import nn

from ..errors import SslabError

_LOADERS = ("hf-hub:", "hf_hub:", "local-dir:")


def check_model_name(name: str) -> None:
    """Refuse a name timm does not know, suggesting the nearest names (not merely a shared prefix)."""
    if name.startswith(_LOADERS) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.75)
    way = f"did you mean {' or '.join(close)}?" if close else "python -c \"import timm; print(timm.list_models('*vit*'))\" lists names"
    raise SslabError(f"--model {name!r}: unknown timm model; {way}")


def _init_parameters(name: str, class_name: str) -> list[str]:
    """Keyword names of the timm class ``class_name`` that builds ``name`` (empty if not found)."""
    try:
        module = inspect.getmodule(timm.models.model_entrypoint(name))
        cls = getattr(module, class_name, None)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")] if cls else []
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError):
        return []


def create_timm_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)``; an unknown name or keyword is a :class:`SslabError` naming it."""
    check_model_name(name)
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as e:
        m = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(e))
        if not m:
            raise
        class_name, arg = m.groups()
        close = difflib.get_close_matches(arg, _init_parameters(name, class_name), n=1)
        way = (f"did you mean {close[0]!r}?" if close
               else f"see the arguments of timm's {class_name}")
        raise SslabError(f"--model-kwargs: {name} ({class_name}) has no argument {arg!r}; {way}") from None
