"""How a network executes: opt-in ``torch.compile`` and activation checkpointing.

Neither changes the maths. ``torch.compile`` (inductor) fuses the elementwise work around the
matmuls (norms, GELU, residual adds, the loss) into generated kernels: C++/OpenMP on CPU, Triton
on CUDA. It compiles in place (``nn.Module.compile``), so state-dict keys, DDP wrapping,
checkpoints and exports stay as they are. Activation checkpointing keeps only each block's input
for the backward pass and recomputes the block there (timm's ``set_grad_checkpointing``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import torch
from torch import nn

from ..errors import SslabError

# torch.compile backend. Inductor generates the kernels; the tests that only need the graph traced
# (dynamo + AOTAutograd, e.g. under bf16 autocast) switch this to "aot_eager", which generates none.
COMPILE_BACKEND = "inductor"


def check_compile_available(device_type: str) -> None:
    """Raise (before any compute) if ``torch.compile`` cannot build kernels for ``device_type``."""
    if device_type == "cpu" and COMPILE_BACKEND == "inductor":
        cxx = os.environ.get("CXX", "g++")
        if not (shutil.which(cxx) or shutil.which("c++") or shutil.which("clang++")):
            raise SslabError(f"compile needs a C++ compiler on CPU (torch inductor), found none ({cxx!r}, c++, "
                             "clang++ not on PATH); install g++ or pass --compile false")


def compile_in_place(module: nn.Module) -> nn.Module:
    """``module``'s forward compiled on first call (``nn.Module.compile``); same object, same keys."""
    check_compile_available("cuda" if torch.cuda.is_available() else "cpu")
    module.compile(backend=COMPILE_BACKEND)
    return module


def compile_function(fn: Callable) -> Callable:
    """``torch.compile(fn)``, e.g. a loss computed outside a module."""
    check_compile_available("cuda" if torch.cuda.is_available() else "cpu")
    return torch.compile(fn, backend=COMPILE_BACKEND)


def choose_attention_kernel(module: nn.Module, device_type: str, mixed_precision: str) -> None:
    """Pick how timm's attention layers (any module with ``fused_attn``) compute softmax(q k^T / sqrt(d)) v.

    The fused ``scaled_dot_product_attention`` everywhere, except on the CPU under bf16: there torch's
    CPU flash kernel is the slow part of the step, and timm's explicit path (two bf16 matmuls and a
    softmax; the official DINO ViT's own formulation) ran a ViT-S/16 forward + backward 1.6x faster
    on 96 px crops and 1.3x on 224 px (``benchmarks/step_speed.py --precision bf16``). In fp32 the two
    were within 1% compiled (6% either way eager), so the fused kernel stays. The same maths either way; the explicit
    path keeps each block's (heads, L, L) attention matrix for the backward pass (ViT-B/16 MAE in
    bf16: 10-30 MB per image, as softmax runs in bf16 or fp32).
    """
    fused = not (device_type == "cpu" and mixed_precision == "bf16")
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


def set_grad_checkpointing(module: nn.Module, enable: bool) -> None:
    """Turn activation checkpointing on or off through the module's ``set_grad_checkpointing``
    (timm encoders, :class:`~sslab.models.mae.MaskedAutoencoderViT`, Swin MAE, the DINO wrapper)."""
    if not hasattr(module, "set_grad_checkpointing"):
        if enable:
            raise SslabError(f"grad_checkpointing is not available for {type(module).__name__}; "
                             "pass --grad-checkpointing false")
        return
    module.set_grad_checkpointing(enable)
