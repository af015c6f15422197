"""Make frozen (eval-mode, never trained again) networks cheaper to run.

Online KD runs every teacher on every batch, so on a CPU the teachers' forward passes are
most of a step. Two exact-in-intent rewrites cut that cost: folding each BatchNorm into the
convolution before it (one op instead of two), and running in bfloat16 with NHWC layout
where the CPU or GPU has native bf16 matrix units (oneDNN's fast path on AVX512-BF16/AMX).
bf16 moves logits by a fraction of a percent, far below what a softened (T >= 1) target
can resolve; `fp32` keeps full precision for anyone who wants it.

Neither is bit-for-bit with the original model: folding changes the rounding (outputs agree
to about 1e-4 relative, checked in tests/test_frozen_teachers.py), and any convolution's
output may change in the last bits with the batch size or thread count it runs with (see
amalgam/distill/teachers/cache.py for the tolerances promised for training targets).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

TEACHER_PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    # exact types only: timm's BatchNormAct2d is a BatchNorm2d that also applies an activation
    return (type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and norm.track_running_stats
            and conv.out_channels == norm.num_features and not conv.training and not norm.training)


def _declared_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, norm) child names whose wiring is certain: consecutive children of a Sequential,
    plus pairs a module class declares in `FOLDABLE_CONV_BN` (it computes norm(conv(x)) and
    uses conv's output nowhere else)."""
    pairs = list(getattr(module, "FOLDABLE_CONV_BN", ()))
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        pairs += list(zip(names, names[1:], strict=False))
    return pairs


def fold_batchnorm(model: nn.Module) -> int:
    """Fold eval-mode BatchNorm2d layers into the Conv2d feeding them, in place.

    Only pairs whose wiring is certain are folded (see `_declared_pairs`); anything else is
    left as it is, so the function is safe on any model. The BatchNorm becomes an Identity,
    keeping child indices (and slices such as `classifier[:3]`) valid. Returns the count.
    """
    folded = 0
    for module in list(model.modules()):
        for conv_name, norm_name in _declared_pairs(module):
            conv, norm = getattr(module, conv_name), getattr(module, norm_name)
            if _foldable(conv, norm):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 convolutions are faster than fp32 here, not merely supported."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def resolve_precision(choice: str, device: torch.device) -> str:
    """`auto` → bf16 where the hardware runs it natively, else fp32."""
    if choice not in TEACHER_PRECISIONS:
        raise ValueError(f"teacher precision must be one of {TEACHER_PRECISIONS}, got {choice!r}")
    if choice != "auto":
        return choice
    return "bf16" if native_bf16(device) else "fp32"
