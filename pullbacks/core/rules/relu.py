"""The ReLU family: ReLU, ReLU6 / hardtanh, LeakyReLU (docs/method.md, "The gates").

Forward bit for bit; in the backward pass the local derivative becomes

    ReLU                 grad_in = grad_out * s(z / T)
    hardtanh(lo, hi)     grad_in = grad_out * s((z - lo) / T) * s((hi - z) / T)
    LeakyReLU(a)         grad_in = grad_out * (a + (1 - a) s(z / T))

with ``s`` the sigmoid or the standard normal CDF (the ``gate`` option) and ``z`` the
forward input of that call. ``grad * sigmoid(z / T)`` is exactly the backward of softplus
with ``beta = 1 / T``: one fused kernel (``times`` below), and all the gate arithmetic
stays in the backward pass.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Call, GateRule


def shape(u: Tensor, gate: str) -> Tensor:
    """``s(u)``: the sigmoid or Phi, the standard normal CDF."""
    return torch.sigmoid(u) if gate == "sigmoid" else _phi_(u.clone())


_SQRT1_2 = 1.0 / math.sqrt(2.0)


def _phi_(v: Tensor) -> Tensor:
    """``Phi(v) = (1 + erf(v / sqrt 2)) / 2`` in place. The formula of ``torch.special.ndtr``
    (bitwise the same in float32, within an ulp in float64), whose CPU kernel is not
    vectorised: erf's is, four times faster on 2 cores (1×56×56×384: 1.9 vs 7.6 ms)."""
    if v.dtype not in (torch.float32, torch.float64):
        return torch.special.ndtr(v, out=v)
    return v.mul_(_SQRT1_2).erf_().add_(1.0).mul_(0.5)


@functools.cache
def _threshold(dtype: torch.dtype) -> float:
    """Above this ``beta * u``, ``sigmoid`` rounds to 1 in ``dtype`` (and ``exp`` is finite)."""
    return -math.log(torch.finfo(dtype).eps / 4)


def gate_times(grad: Tensor, u: Tensor, beta: float, gate: str, out: Tensor | None = None) -> Tensor:
    """``grad * s(beta * u)``, written into ``out`` if given (``out`` may be ``u``).

    Sigmoid: one fused kernel, softplus's backward ``grad * e / (1 + e)``, ``e = exp(beta u)``;
    above the threshold, where ``sigmoid`` rounds to 1 anyway, it returns ``grad``. Phi: a few
    vectorised passes (see ``_phi_``).
    """
    if gate == "sigmoid":
        threshold = _threshold(u.dtype)
        if out is None:
            return torch.ops.aten.softplus_backward(grad, u, beta, threshold)
        return torch.ops.aten.softplus_backward.grad_input(grad, u, beta, threshold, grad_input=out)
    if out is u and beta == 1.0:
        v = u
    else:
        v = torch.mul(u, beta) if out is None else torch.mul(u, beta, out=out)
    return _phi_(v).mul_(grad)


# ----------------------------------------------------------------------------- ReLU


def _relu_gate(z: Tensor, t: float, gate: str) -> Tensor:
    return shape(z / t, gate)


def _relu_times(grad: Tensor, z: Tensor, t: float, fresh: bool, gate: str) -> Tensor:
    return gate_times(grad, z, 1.0 / t, gate, out=z if fresh else None)


def _gate_option(call: Call, options: Any) -> tuple:
    return (options.gate,)


# ----------------------------------------------------------------------------- hardtanh, ReLU6


def _hardtanh_gate(z: Tensor, t: float, lo: float, hi: float, gate: str) -> Tensor:
    return shape((z - lo) / t, gate) * shape((hi - z) / t, gate)


def _hardtanh_times(grad: Tensor, z: Tensor, t: float, fresh: bool, lo: float, hi: float, gate: str) -> Tensor:
    beta = 1.0 / t
    lower = gate_times(grad, z - lo if lo else z, beta, gate)
    above = z.sub_(hi) if fresh else z - hi  # s((hi - z) / T) = s(-(z - hi) / T)
    return gate_times(lower, above, -beta, gate, out=above)


def _relu6_params(call: Call, options: Any) -> tuple:
    return 0.0, 6.0, options.gate


def _hardtanh_params(call: Call, options: Any) -> tuple:
    return float(call.arg(1, "min_val", -1.0)), float(call.arg(2, "max_val", 1.0)), options.gate


# ----------------------------------------------------------------------------- LeakyReLU


def _leaky_gate(z: Tensor, t: float, slope: float, gate: str) -> Tensor:
    return slope + (1.0 - slope) * shape(z / t, gate)


def _leaky_times(grad: Tensor, z: Tensor, t: float, fresh: bool, slope: float, gate: str) -> Tensor:
    g = gate_times(grad, z, 1.0 / t, gate, out=z if fresh else None)
    return g.mul_(1.0 - slope).add_(grad, alpha=slope)


def _leaky_params(call: Call, options: Any) -> tuple:
    return float(call.arg(1, "negative_slope", 0.01)), options.gate


_nn = torch._C._nn
TEMPERATURE = 0.3  # the paper's value: ``temperature=`` (docs/method.md)
RULES = (
    GateRule(
        "relu",
        (F.relu, torch.relu, Tensor.relu),
        _relu_gate,
        TEMPERATURE,
        (torch.relu_, Tensor.relu_),
        "ReLU: gate s(z/T)",
        _gate_option,
        _relu_times,
        nodes=("ReluBackward",),
    ),
    GateRule(
        "relu",
        (F.relu6, _nn.relu6),
        _hardtanh_gate,
        TEMPERATURE,
        (_nn.relu6_,),
        "ReLU6: gate s(z/T) s((6-z)/T)",
        _relu6_params,
        _hardtanh_times,
        nodes=("HardtanhBackward",),
    ),
    GateRule(
        "relu",
        (F.hardtanh, _nn.hardtanh),
        _hardtanh_gate,
        TEMPERATURE,
        (_nn.hardtanh_,),
        "hardtanh(lo, hi): gate s((z-lo)/T) s((hi-z)/T)",
        _hardtanh_params,
        _hardtanh_times,
        nodes=("HardtanhBackward",),
    ),
    GateRule(
        "relu",
        (F.leaky_relu, _nn.leaky_relu),
        _leaky_gate,
        TEMPERATURE,
        (_nn.leaky_relu_,),
        "LeakyReLU(a): gate a + (1-a) s(z/T)",
        _leaky_params,
        _leaky_times,
        nodes=("LeakyReluBackward",),
    ),
)
