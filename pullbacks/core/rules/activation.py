"""``x * s(x)`` activations: SiLU, GELU, Hardswish, Mish (docs/method.md, "Beyond ReLU").

Forward bit for bit; in the backward pass the activation's own gate at ``z / T``, without
the derivative of the gate:

    grad_in = grad_out * s(z / T)

    SiLU       s = sigmoid                                    family "silu"       (T = 1.6)
    GELU       s = Phi, or its tanh form for approximate="tanh" family "gelu"     (T = 1.0)
    Hardswish  s = hardsigmoid = clamp(z / 6 + 1/2, 0, 1)     family "hardswish"  (T = 1.0)
    Mish       s = tanh(softplus(z))                          family "mish"       (T = 1.0)

At ``T = 1`` this is the ordinary derivative minus its gate-derivative term (for SiLU
``sigmoid(z)`` instead of ``sigmoid(z) (1 + z (1 - sigmoid(z)))``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..replay import Replay, keep_input, saved_input
from .base import Call, Rule, flush_subnormals_
from .relu import gate_times


def _gelu_tanh_gate_(u: Tensor) -> Tensor:
    """``(1 + tanh(sqrt(2 / pi) (u + 0.044715 u^3))) / 2`` in place."""
    cube = u.pow(3).mul_(0.044715)
    return u.add_(cube).mul_(math.sqrt(2.0 / math.pi)).tanh_().add_(1.0).mul_(0.5)


def _mish_gate_(u: Tensor) -> Tensor:
    return F.softplus(u).tanh_()


# family -> the forward function, and s applied to a fresh buffer u (None: fused, see backward)
_GATES: dict[str, Optional[Callable[[Tensor], Tensor]]] = {
    "silu": None,  # sigmoid: gate_times' fused kernel
    "gelu": None,  # Phi: gate_times' erfc form
    "gelu_tanh": _gelu_tanh_gate_,
    "hardswish": lambda u: F.hardsigmoid(u, inplace=True),
    "mish": _mish_gate_,
}


class SoftActivation(torch.autograd.Function):
    """``forward(z)`` of an ``x * s(x)`` activation; ``grad * s(z / T)`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, forward: Callable[[Tensor, bool], Tensor], gate: str, temperature: float,
                inplace: bool, replay: Optional[Replay]):
        ctx.gate, ctx.temperature = gate, temperature
        keep_input(ctx, z, inplace, replay)
        if inplace:
            ctx.mark_dirty(z)
        return forward(z, inplace)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, fresh = saved_input(ctx)
        beta = 1.0 / ctx.temperature
        if ctx.gate in ("silu", "gelu"):
            s = "sigmoid" if ctx.gate == "silu" else "normal_cdf"
            g = gate_times(grad, z, beta, s, out=z if fresh else None)
        else:
            u = z.mul_(beta) if fresh else z * beta
            g = _GATES[ctx.gate](u).mul_(grad)
        return flush_subnormals_(g), None, None, None, None, None


# ----------------------------------------------------------------------------- the rules

def _rule(family: str, function: Callable, inplace_function: Optional[Callable]):
    """The rule of ``function(z, inplace=False)`` (F.silu, F.hardswish, F.mish)."""

    def forward(z: Tensor, inplace: bool) -> Tensor:
        return inplace_function(z) if inplace else function(z)

    def apply(call: Call, mode) -> Tensor:
        z = call.input
        return SoftActivation.apply(z, forward, family, mode.options.temperature_of(family),
                                    call.writes_input(1), mode.replay(z))

    return apply


def _gelu(call: Call, mode) -> Tensor:
    z = call.input
    approximate = call.arg(1, "approximate", "none")
    forward = lambda z, inplace: F.gelu(z, approximate=approximate)  # noqa: E731 - no in-place form
    gate = "gelu_tanh" if approximate == "tanh" else "gelu"
    return SoftActivation.apply(z, forward, gate, mode.options.temperature_of("gelu"), False, mode.replay(z))


_nn = torch._C._nn
RULES = (
    Rule("silu", (F.silu, _nn.silu), (_nn.silu_,), _rule("silu", _nn.silu, _nn.silu_)),
    Rule("gelu", (F.gelu,), (), _gelu),
    Rule("hardswish", (F.hardswish, _nn.hardswish), (_nn.hardswish_,),
         _rule("hardswish", _nn.hardswish, _nn.hardswish_)),
    Rule("mish", (F.mish, _nn.mish), (_nn.mish_,), _rule("mish", _nn.mish, _nn.mish_)),
)
