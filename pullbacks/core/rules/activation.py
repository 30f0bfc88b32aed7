"""``x * s(x)`` activations: SiLU, GELU, Hardswish, Mish (docs/method.md, "Beyond ReLU").

Forward bit for bit; in the backward pass the activation's own gate at ``z / T``, without
the derivative of the gate:

    grad_in = grad_out * s(z / T)

    SiLU       s = sigmoid                                     (T = 1.6, the authors')
    GELU       s = Phi, or its tanh form for approximate="tanh" (T = 1.0, the authors')
    Hardswish  s = hardsigmoid = clamp(z / 6 + 1/2, 0, 1)      (T = 1.0, ours)
    Mish       s = tanh(softplus(z))                           (T = 1.0, ours)

At ``T = 1`` this is the ordinary derivative minus its gate-derivative term (for SiLU
``sigmoid(z)`` instead of ``sigmoid(z) (1 + z (1 - sigmoid(z)))``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Call, GateRule
from .relu import gate_times, shape


def _scaled(z: Tensor, t: float, fresh: bool) -> Tensor:
    """``z / T``, in ``z``'s own buffer when it is fresh."""
    return z.mul_(1.0 / t) if fresh else z * (1.0 / t)


# ----------------------------------------------------------------------------- SiLU


def _silu_gate(z: Tensor, t: float) -> Tensor:
    return torch.sigmoid(z / t)


def _silu_times(grad: Tensor, z: Tensor, t: float, fresh: bool) -> Tensor:
    return gate_times(grad, z, 1.0 / t, "sigmoid", out=z if fresh else None)


# ----------------------------------------------------------------------------- GELU


def _gelu_tanh_(u: Tensor) -> Tensor:
    """``(1 + tanh(sqrt(2 / pi) (u + 0.044715 u^3))) / 2`` in place."""
    cube = u.pow(3).mul_(0.044715)
    return u.add_(cube).mul_(math.sqrt(2.0 / math.pi)).tanh_().add_(1.0).mul_(0.5)


def _gelu_gate(z: Tensor, t: float, approximate: str) -> Tensor:
    return _gelu_tanh_(z / t) if approximate == "tanh" else shape(z / t, "normal_cdf")


def _gelu_times(grad: Tensor, z: Tensor, t: float, fresh: bool, approximate: str) -> Tensor:
    if approximate == "tanh":
        return _gelu_tanh_(_scaled(z, t, fresh)).mul_(grad)
    return gate_times(grad, z, 1.0 / t, "normal_cdf", out=z if fresh else None)


def _gelu_params(call: Call, options: Any) -> tuple:
    return (call.arg(1, "approximate", "none"),)


# ----------------------------------------------------------------------------- Hardswish, Mish


def _hardswish_gate(z: Tensor, t: float) -> Tensor:
    return F.hardsigmoid(z / t)


def _hardswish_times(grad: Tensor, z: Tensor, t: float, fresh: bool) -> Tensor:
    return F.hardsigmoid(_scaled(z, t, fresh), inplace=True).mul_(grad)


def _mish_gate(z: Tensor, t: float) -> Tensor:
    return F.softplus(z / t).tanh_()


def _mish_times(grad: Tensor, z: Tensor, t: float, fresh: bool) -> Tensor:
    return F.softplus(_scaled(z, t, fresh)).tanh_().mul_(grad)


_nn = torch._C._nn
RULES = (
    GateRule(
        "silu",
        (F.silu, _nn.silu),
        _silu_gate,
        1.6,
        (_nn.silu_,),
        "SiLU z·σ(z): gate σ(z/T)",
        times=_silu_times,
        nodes=("SiluBackward",),
    ),
    GateRule(
        "gelu",
        (F.gelu,),
        _gelu_gate,
        1.0,
        (),
        "GELU z·Φ(z) (also its tanh form): gate Φ(z/T)",
        params=_gelu_params,
        times=_gelu_times,
        nodes=("GeluBackward",),
    ),
    GateRule(
        "hardswish",
        (F.hardswish, _nn.hardswish),
        _hardswish_gate,
        1.0,
        (_nn.hardswish_,),
        "Hardswish z·hardsigmoid(z): gate hardsigmoid(z/T)",
        times=_hardswish_times,
        nodes=("HardswishBackward",),
    ),
    GateRule(
        "mish",
        (F.mish, _nn.mish),
        _mish_gate,
        1.0,
        (_nn.mish_,),
        "Mish z·tanh(softplus(z)): gate tanh(softplus(z/T))",
        times=_mish_times,
        nodes=("MishBackward",),
    ),
)
