"""The ReLU family: ReLU, ReLU6 / hardtanh, LeakyReLU (docs/method.md, "The gates").

Forward bit for bit; in the backward pass the local derivative becomes

    ReLU                 grad_in = grad_out * s(z / T)
    hardtanh(lo, hi)     grad_in = grad_out * s((z - lo) / T) * s((hi - z) / T)
    LeakyReLU(a)         grad_in = grad_out * (a + (1 - a) s(z / T))

with ``s`` the sigmoid or the standard normal CDF and ``z`` the forward input of that
call. ``grad * sigmoid(z / T)`` is exactly the backward of softplus with ``beta = 1 / T``:
one fused kernel, and all the gate arithmetic stays in the backward pass.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..replay import Replay, keep_input, saved_input
from .base import Call, Rule, flush_subnormals_

DEFAULT_TEMPERATURE = 0.3


def _gate_(t: Tensor, gate: str) -> Tensor:
    """Apply the gate ``s`` to ``t`` in place and return it."""
    if gate == "sigmoid":
        return t.sigmoid_()
    return torch.special.ndtr(t, out=t)  # Phi, the standard normal CDF, in one kernel


@functools.lru_cache(maxsize=None)
def _threshold(dtype: torch.dtype) -> float:
    """Above this ``beta * u``, ``sigmoid`` rounds to 1 in ``dtype`` (and ``exp`` is finite)."""
    return -math.log(torch.finfo(dtype).eps / 4)


def gate_times(grad: Tensor, u: Tensor, beta: float, gate: str, out: Optional[Tensor] = None) -> Tensor:
    """``grad * s(beta * u)``, written into ``out`` if given (``out`` may be ``u``).

    Sigmoid: one fused kernel, softplus's backward ``grad * e / (1 + e)``, ``e = exp(beta u)``;
    above the threshold, where ``sigmoid`` rounds to 1 anyway, it returns ``grad``.
    """
    if gate == "sigmoid":
        threshold = _threshold(u.dtype)
        if out is None:
            return torch.ops.aten.softplus_backward(grad, u, beta, threshold)
        return torch.ops.aten.softplus_backward.grad_input(grad, u, beta, threshold, grad_input=out)
    v = torch.mul(u, beta) if out is None else torch.mul(u, beta, out=out)
    return _gate_(v, gate).mul_(grad)


class SoftReLU(torch.autograd.Function):
    """``relu(z)`` forward; ``grad * s(z / T)`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, temperature: float, gate: str, inplace: bool, replay: Optional[Replay]):
        ctx.temperature, ctx.gate = temperature, gate
        keep_input(ctx, z, inplace, replay)
        if inplace:
            ctx.mark_dirty(z)
            return torch.relu_(z)
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, fresh = saved_input(ctx)
        g = gate_times(grad, z, 1.0 / ctx.temperature, ctx.gate, out=z if fresh else None)
        return flush_subnormals_(g), None, None, None, None


class SoftHardtanh(torch.autograd.Function):
    """``hardtanh(z, lo, hi)`` forward (ReLU6 is ``lo=0, hi=6``);
    ``grad * s((z - lo) / T) * s((hi - z) / T)`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, lo: float, hi: float, temperature: float, gate: str, inplace: bool,
                replay: Optional[Replay]):
        ctx.lo, ctx.hi, ctx.temperature, ctx.gate = lo, hi, temperature, gate
        keep_input(ctx, z, inplace, replay)
        if inplace:
            ctx.mark_dirty(z)
            return F.hardtanh(z, lo, hi, inplace=True)
        return F.hardtanh(z, lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, fresh = saved_input(ctx)
        beta = 1.0 / ctx.temperature
        lower = gate_times(grad, z - ctx.lo if ctx.lo else z, beta, ctx.gate)
        above = z.sub_(ctx.hi) if fresh else z - ctx.hi  # s((hi - z) / T) = s(-(z - hi) / T)
        g = gate_times(lower, above, -beta, ctx.gate, out=above)
        return flush_subnormals_(g), None, None, None, None, None, None


class SoftLeakyReLU(torch.autograd.Function):
    """``leaky_relu(z, a)`` forward; ``grad * (a + (1 - a) s(z / T))`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, slope: float, temperature: float, gate: str, inplace: bool,
                replay: Optional[Replay]):
        ctx.slope, ctx.temperature, ctx.gate = slope, temperature, gate
        keep_input(ctx, z, inplace, replay)
        if inplace:
            ctx.mark_dirty(z)
            return F.leaky_relu(z, slope, inplace=True)
        return F.leaky_relu(z, slope)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, fresh = saved_input(ctx)
        a = ctx.slope
        g = gate_times(grad, z, 1.0 / ctx.temperature, ctx.gate, out=z if fresh else None)
        return flush_subnormals_(g.mul_(1.0 - a).add_(grad, alpha=a)), None, None, None, None, None




# ----------------------------------------------------------------------------- the rules


def _relu(call: Call, mode) -> Tensor:
    z, o = call.input, mode.options
    return SoftReLU.apply(z, o.temperature, o.gate, call.writes_input(1), mode.replay(z))


def _relu6(call: Call, mode) -> Tensor:
    z, o = call.input, mode.options
    return SoftHardtanh.apply(z, 0.0, 6.0, o.temperature, o.gate, call.writes_input(1), mode.replay(z))


def _hardtanh(call: Call, mode) -> Tensor:
    z, o = call.input, mode.options
    lo, hi = float(call.arg(1, "min_val", -1.0)), float(call.arg(2, "max_val", 1.0))
    return SoftHardtanh.apply(z, lo, hi, o.temperature, o.gate, call.writes_input(3), mode.replay(z))


def _leaky_relu(call: Call, mode) -> Tensor:
    z, o = call.input, mode.options
    slope = float(call.arg(1, "negative_slope", 0.01))
    return SoftLeakyReLU.apply(z, slope, o.temperature, o.gate, call.writes_input(2), mode.replay(z))


_nn = torch._C._nn
RULES = (
    Rule("relu", (F.relu, torch.relu, Tensor.relu), (torch.relu_, Tensor.relu_), _relu),
    Rule("relu", (F.relu6, _nn.relu6), (_nn.relu6_,), _relu6),
    Rule("relu", (F.hardtanh, _nn.hardtanh), (_nn.hardtanh_,), _hardtanh),
    Rule("relu", (F.leaky_relu, _nn.leaky_relu), (_nn.leaky_relu_,), _leaky_relu),
)
