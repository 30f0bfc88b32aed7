"""The soft gates as autograd functions (METHOD.md §2–3).

Each function computes the ordinary forward pass, bit for bit, and replaces only the
local derivative in the backward pass:

    ReLU                 grad_in = grad_out * s(z / T)
    hardtanh(lo, hi)     grad_in = grad_out * s((z - lo) / T) * s((hi - z) / T)
    LeakyReLU(a)         grad_in = grad_out * (a + (1 - a) s(z / T))
    max pool             grad_in = sum_W grad_out[W] * w_j (1 + (x_j - s_W) / T)   ("soft")
                         grad_in = sum_W grad_out[W] * w_j                         ("detached")

with ``s`` the sigmoid or the standard normal CDF, ``z`` the forward input of that call
and ``w = softmax_W(x / T)`` over each pooling window ``W``. Only ``z`` is saved; all gate
arithmetic happens in the backward pass, with as few temporaries as possible.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor

GATES = ("sigmoid", "normal_cdf")
POOLS = ("soft", "detached")


def _gate_(t: Tensor, gate: str) -> Tensor:
    """Apply the gate ``s`` to ``t`` in place and return it."""
    if gate == "sigmoid":
        return t.sigmoid_()
    # Phi(t) = (1 + erf(t / sqrt 2)) / 2
    return t.mul_(1.0 / math.sqrt(2.0)).erf_().add_(1.0).mul_(0.5)


def gate_value(z: Tensor, temperature: float, gate: str = "sigmoid") -> Tensor:
    """``s(z / T)`` in a fresh tensor: the soft derivative of ReLU at ``z``."""
    return _gate_(torch.div(z, temperature), gate)


def _saved_input(ctx, z: Tensor, inplace: bool) -> Tensor:
    """Save ``z`` for the backward pass; an in-place call overwrites it, so keep a copy."""
    ctx.save_for_backward(z.clone() if inplace else z)
    return z


class SoftReLU(torch.autograd.Function):
    """``relu(z)`` forward; ``grad * s(z / T)`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, temperature: float, gate: str, inplace: bool) -> Tensor:
        ctx.temperature, ctx.gate = temperature, gate
        _saved_input(ctx, z, inplace)
        if inplace:
            ctx.mark_dirty(z)
            return torch.relu_(z)
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (z,) = ctx.saved_tensors
        return gate_value(z, ctx.temperature, ctx.gate).mul_(grad), None, None, None


class SoftHardtanh(torch.autograd.Function):
    """``hardtanh(z, lo, hi)`` forward (ReLU6 is ``lo=0, hi=6``);
    ``grad * s((z - lo) / T) * s((hi - z) / T)`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, lo: float, hi: float, temperature: float, gate: str, inplace: bool) -> Tensor:
        ctx.lo, ctx.hi, ctx.temperature, ctx.gate = lo, hi, temperature, gate
        _saved_input(ctx, z, inplace)
        if inplace:
            ctx.mark_dirty(z)
            return F.hardtanh(z, lo, hi, inplace=True)
        return F.hardtanh(z, lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (z,) = ctx.saved_tensors
        t = ctx.temperature
        lower = _gate_(torch.sub(z, ctx.lo).div_(t), ctx.gate)
        upper = _gate_(torch.sub(ctx.hi, z).div_(t), ctx.gate)
        return lower.mul_(upper).mul_(grad), None, None, None, None, None


class SoftLeakyReLU(torch.autograd.Function):
    """``leaky_relu(z, a)`` forward; ``grad * (a + (1 - a) s(z / T))`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, slope: float, temperature: float, gate: str, inplace: bool) -> Tensor:
        ctx.slope, ctx.temperature, ctx.gate = slope, temperature, gate
        _saved_input(ctx, z, inplace)
        if inplace:
            ctx.mark_dirty(z)
            return F.leaky_relu(z, slope, inplace=True)
        return F.leaky_relu(z, slope)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (z,) = ctx.saved_tensors
        a = ctx.slope
        g = gate_value(z, ctx.temperature, ctx.gate).mul_(1.0 - a).add_(a)
        return g.mul_(grad), None, None, None, None, None


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def soft_max_pool2d_backward(
    x: Tensor,
    grad_out: Tensor,
    kernel_size,
    stride,
    padding,
    dilation,
    temperature: float,
    variant: str = "soft",
) -> Tensor:
    """Gradient of the soft max pool (METHOD.md §3) at ``x``, pulled back from ``grad_out``.

    Windows are laid out with ``unfold`` on ``x`` padded by ``-inf`` (padding entries get
    weight 0); ``ceil_mode`` is honoured by padding the bottom/right just enough to cover
    the windows of ``grad_out``'s spatial size. Overlapping windows are summed by ``fold``.
    """
    k, s, p, d = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    squeeze = x.dim() == 3
    if squeeze:
        x, grad_out = x.unsqueeze(0), grad_out.unsqueeze(0)
    n, c, h, w = x.shape
    h_out, w_out = grad_out.shape[-2:]
    # padded extent needed so that every output window exists
    need_h = (h_out - 1) * s[0] + d[0] * (k[0] - 1) + 1
    need_w = (w_out - 1) * s[1] + d[1] * (k[1] - 1) + 1
    pad_bottom = max(need_h - h - p[0], 0)
    pad_right = max(need_w - w - p[1], 0)
    xp = F.pad(x, (p[1], pad_right, p[0], pad_bottom), value=float("-inf"))
    hp, wp = xp.shape[-2:]
    kk = k[0] * k[1]
    # (n, c, kk, L) window entries
    win = F.unfold(xp, k, dilation=d, stride=s).view(n, c, kk, h_out * w_out)
    weights = torch.softmax(win / temperature, dim=2)
    if variant == "soft":
        values = win.nan_to_num(neginf=0.0) if p != (0, 0) or pad_bottom or pad_right else win
        pooled = (weights * values).sum(dim=2, keepdim=True)
        # w_j * (1 + (x_j - s_W) / T); padding entries have w_j = 0
        local = values.sub_(pooled).div_(temperature).add_(1.0).mul_(weights)
    else:
        local = weights
    local.mul_(grad_out.reshape(n, c, 1, h_out * w_out))
    grad = F.fold(local.view(n, c * kk, h_out * w_out), (hp, wp), k, dilation=d, stride=s)
    grad = grad[..., p[0] : p[0] + h, p[1] : p[1] + w]
    return grad.squeeze(0) if squeeze else grad


class SoftMaxPool2d(torch.autograd.Function):
    """Ordinary ``max_pool2d`` forward (nothing saved but the input); soft max-pool
    gradient backward."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode: bool,
                return_indices: bool, temperature: float, variant: str):
        ctx.args = (kernel_size, stride, padding, dilation)
        ctx.temperature, ctx.variant = temperature, variant
        ctx.save_for_backward(x)
        if return_indices:
            out, indices = F.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
            ctx.mark_non_differentiable(indices)
            return out, indices
        return torch.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def backward(ctx, grad: Tensor, *_):
        (x,) = ctx.saved_tensors
        g = soft_max_pool2d_backward(x, grad, *ctx.args, ctx.temperature, ctx.variant)
        return g, None, None, None, None, None, None, None, None

