"""Max pooling: the ordinary forward, the gradient of a soft max pool backward
(docs/method.md, "The pool").

For each pooling window ``W`` with entries ``x_j``, ``w = softmax_W(x / T)`` and
``s_W = sum_j w_j x_j``:

    grad_in[j] = sum_W grad_out[W] * w_j (1 + (x_j - s_W) / T)      ("soft", the paper)
    grad_in[j] = sum_W grad_out[W] * w_j                            ("detached")

Padding positions are not window entries; ``kernel_size``, ``stride``, ``padding``,
``dilation`` and ``ceil_mode`` follow the call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Call, Context, SoftenedRule, flush_subnormals_


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _offset_span(size: int, size_out: int, offset: int, stride: int) -> tuple[slice, slice]:
    """For the window entry at ``offset`` (already minus the padding): the outputs whose
    entry lies inside the input, and the input positions of those entries."""
    lo = max(0, -(offset // stride))  # first output with offset + r * stride >= 0
    hi = min(size_out, (size - 1 - offset) // stride + 1) if size > offset else 0
    hi = max(hi, lo)
    return slice(lo, hi), slice(offset + lo * stride, offset + (hi - 1) * stride + 1 if hi > lo else 0, stride)


def _fill_outside(t: Tensor, rows: slice, cols: slice, value: float) -> None:
    """Fill the last two dims of ``t`` with ``value`` outside ``[rows, cols]``."""
    t[..., : rows.start, :].fill_(value)
    t[..., rows.stop :, :].fill_(value)
    t[..., rows, : cols.start].fill_(value)
    t[..., rows, cols.stop :].fill_(value)


_POOL_BLOCK_BYTES = 4 << 20  # window entries per block: about a cache's worth, and small
# enough for the allocator to reuse one block's memory for the next


def _blocks(n: int, c: int, plane_bytes: int) -> list[tuple[slice, slice]]:
    """``(batch, channel)`` slices covering ``n x c`` planes, about ``_POOL_BLOCK_BYTES`` each."""
    planes = max(1, _POOL_BLOCK_BYTES // max(plane_bytes, 1))
    nb, cb = (max(1, planes // c), c) if planes >= c else (1, planes)
    return [(slice(b, b + nb), slice(ch, ch + cb)) for b in range(0, n, nb) for ch in range(0, c, cb)]


def _soft_pool_local(x: Tensor, grad_out: Tensor, spans: Any, temperature: float, pool: str) -> Tensor:
    """``d_j`` for every window entry ``j``: a ``(kh * kw, n, c, h_out, w_out)`` tensor."""
    u = x.new_empty((len(spans), *grad_out.shape))
    for uj, ((r_out, r_in), (c_out, c_in)) in zip(u, spans):
        uj[:, :, r_out, c_out] = x[:, :, r_in, c_in]
        _fill_outside(uj, r_out, c_out, float("-inf"))  # entries outside x: weight 0
    torch.add(u.amax(0).mul_(-1.0 / temperature), u, alpha=1.0 / temperature, out=u)  # (x - max) / T
    e = torch.exp(u)
    for uj, ((r_out, _), (c_out, _)) in zip(u, spans):
        _fill_outside(uj, r_out, c_out, 0.0)  # so that e * u is 0 there, not 0 * -inf
    total = e.sum(0)
    scale = grad_out / total
    if pool == "detached":
        return e.mul_(scale)
    eu = u.mul_(e)
    shift = eu.sum(0).div_(total).neg_().add_(1.0).mul_(scale)  # (1 - Q / S) * scale
    return eu.mul_(scale).addcmul_(e, shift)


_POOLED_RANGE = 60.0  # largest (max - min) / T of a plane that the pooled form takes
_POOLED_GRAD = 1e8  # largest |grad_out| it takes (so that grad / S cannot overflow)
_LN_2, _LOG2_E = math.log(2.0), 1.0 / math.log(2.0)


def _along(dim: int, index: slice) -> tuple:
    """An index that applies ``index`` to dimension ``dim`` (-2 or -1)."""
    return (Ellipsis, index, slice(None)) if dim == -2 else (Ellipsis, index)


def _window_sum(v: Tensor, dim: int, k: int, s: int, p: int, size_out: int) -> Tensor:
    """Sums of ``v`` over the windows of one dimension (entries outside ``v`` count 0)."""
    shape = list(v.shape)
    size, shape[dim] = shape[dim], size_out
    out = v.new_zeros(shape)
    for i in range(k):
        at_out, at_in = _offset_span(size, size_out, i - p, s)
        out[_along(dim, at_out)] += v[_along(dim, at_in)]
    return out


def _window_spread(a: Tensor, dim: int, k: int, s: int, p: int, size: int) -> Tensor:
    """The adjoint of :func:`_window_sum`: each entry gets the sum of ``a`` over the windows holding it."""
    shape = list(a.shape)
    size_out, shape[dim] = shape[dim], size
    out = a.new_zeros(shape)
    for i in range(k):
        at_out, at_in = _offset_span(size, size_out, i - p, s)
        out[_along(dim, at_in)] += a[_along(dim, at_out)]
    return out


def _pooled(
    x: Tensor,
    grad_out: Tensor,
    k: tuple[int, int],
    s: tuple[int, int],
    p: tuple[int, int],
    temperature: float,
    pool: str,
    out: Tensor,
) -> bool:
    """The soft max-pool gradient through window sums, written into ``out``; False (and
    nothing written) where it does not apply.

    With ``c`` the largest entry of each plane, ``t = (x - c) / T`` and ``E = exp(t)``, the
    window weights are ``w_j = E_j / S_W`` with ``S_W = sum_W E`` (the shift cancels), and

        grad_in = E * (A (1 + t) - B),   A = sum_{W ∋ j} grad_W / S_W,
                                         B = sum_{W ∋ j} grad_W P_W / S_W^2,  P_W = sum_W E t

    (``E * A`` for "detached"). Window sums are separable (rows, then columns): a few
    passes over ``x`` instead of many over a ``kh * kw`` times larger buffer. Used when
    every plane's ``(max - min) / T`` is at most 60 (so ``E`` stays a normal float and the
    rounding of ``t`` costs at most ``60 eps``) and ``|grad_out| <= 1e8`` (so ``A`` and
    ``B`` stay finite); elsewhere the caller takes the windows one by one.
    """
    inv = 1.0 / temperature
    hi = x.amax(dim=(2, 3), keepdim=True)
    spread = float((hi - x.amin(dim=(2, 3), keepdim=True)).max()) * inv
    if not (spread <= _POOLED_RANGE and float(grad_out.abs().max()) <= _POOLED_GRAD):
        return False  # also on NaN and inf
    (h, w), (h_out, w_out) = x.shape[-2:], grad_out.shape[-2:]

    def window_sum(v: Tensor) -> Tensor:
        return _window_sum(_window_sum(v, -2, k[0], s[0], p[0], h_out), -1, k[1], s[1], p[1], w_out)

    def window_spread(a: Tensor) -> Tensor:
        return _window_spread(_window_spread(a, -1, k[1], s[1], p[1], w), -2, k[0], s[0], p[0], h)

    t2 = torch.sub(x, hi).mul_(inv * _LOG2_E)  # t / ln 2: exp2 is several times faster than exp on CPU
    e = torch.exp2(t2)
    S = window_sum(e)
    a = grad_out / S
    A = window_spread(a)
    if pool == "detached":
        torch.mul(e, A, out=out)
        return True
    P2 = window_sum(e * t2)  # P / ln 2
    B2 = window_spread(a.mul_(P2.div_(S)))  # B / ln 2
    torch.mul(t2.mul_(A).sub_(B2).mul_(_LN_2).add_(A), e, out=out)  # E (A + A t - B)
    return True


def soft_max_pool2d_backward(
    x: Tensor,
    grad_out: Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    temperature: float,
    pool: str = "soft",
) -> Tensor:
    """Gradient of the soft max pool at ``x``, pulled back from ``grad_out``.

    Block by block (a few MiB, so the passes below stay in cache): through window sums
    (:func:`_pooled`) where it applies (overlapping windows, float32/64, no dilation, planes
    of moderate range);
    otherwise window entry by window entry: the entries are copied out of ``x`` offset by
    offset into a ``(kh * kw, n, c, h_out, w_out)`` buffer, ``-inf`` where a window
    reaches past ``x`` (``padding``, ``ceil_mode``). With ``u_j = (x_j - max_W x) / T``,
    ``e_j = exp(u_j)``, ``S = sum_W e`` and ``Q = sum_W e u`` (so ``w_j = e_j / S`` and
    ``(x_j - s_W) / T = u_j - Q / S``):

        d_j = (e_j (1 - Q / S) + e_j u_j) * grad_out[W] / S      ("soft")
        d_j = e_j * grad_out[W] / S                               ("detached")

    and each offset's ``d`` is added back at the input positions it was copied from.
    """
    k, s, p, d = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    squeeze = x.dim() == 3
    if squeeze:
        x, grad_out = x.unsqueeze(0), grad_out.unsqueeze(0)
    n, c, h, w = x.shape
    h_out, w_out = grad_out.shape[-2:]
    overlap = s[0] < k[0] or s[1] < k[1]  # windows that do not overlap are as fast one by one
    pooled = overlap and d == (1, 1) and x.dtype in (torch.float32, torch.float64)
    spans = [
        (_offset_span(h, h_out, i * d[0] - p[0], s[0]), _offset_span(w, w_out, j * d[1] - p[1], s[1]))
        for i in range(k[0])
        for j in range(k[1])
    ]
    grad = torch.empty_like(x)
    # windows that tile x exactly (VGG's 2x2 pools) write every input position once
    tiles = s == k and p == (0, 0) and d == (1, 1) and (h, w) == (h_out * k[0], w_out * k[1])
    window_bytes = len(spans) * h_out * w_out * x.element_size()
    for block in _blocks(n, c, max(window_bytes, h * w * x.element_size()) if pooled else window_bytes):
        g = grad[block]
        if pooled and _pooled(x[block], grad_out[block], k, s, p, temperature, pool, g):
            continue
        local = _soft_pool_local(x[block], grad_out[block], spans, temperature, pool)
        if not tiles:
            g.zero_()
        for dj, ((r_out, r_in), (c_out, c_in)) in zip(local, spans):
            target = g[:, :, r_in, c_in]
            target.copy_(dj[:, :, r_out, c_out]) if tiles else target.add_(dj[:, :, r_out, c_out])
    return grad.squeeze(0) if squeeze else grad


class SoftMaxPool2d(torch.autograd.Function):
    """Ordinary ``max_pool2d`` forward (nothing saved but the input); soft max-pool
    gradient backward."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        ceil_mode: bool,
        return_indices: bool,
        temperature: float,
        pool: str,
    ) -> Tensor | tuple[Tensor, Tensor]:
        ctx.args = (kernel_size, stride, padding, dilation)
        ctx.temperature, ctx.pool = temperature, pool
        ctx.save_for_backward(x)
        if return_indices:
            out, indices = F.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
            ctx.mark_non_differentiable(indices)
            return out, indices
        return torch.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        kernel_size, stride, padding, dilation = ctx.args
        g = soft_max_pool2d_backward(x, grad, kernel_size, stride, padding, dilation, ctx.temperature, ctx.pool)
        return flush_subnormals_(g), None, None, None, None, None, None, None, None


# ----------------------------------------------------------------------------- the rule


def _max_pool2d(call: Call, mode: Context, return_indices: bool | None = None) -> Any:
    kernel_size = call.arg(1, "kernel_size", None)
    stride = call.arg(2, "stride", None)
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = kernel_size
    padding, dilation = call.arg(3, "padding", 0), call.arg(4, "dilation", 1)
    ceil_mode = bool(call.arg(5, "ceil_mode", False))
    if return_indices is None:
        return_indices = bool(call.arg(6, "return_indices", False))
    return SoftMaxPool2d.apply(
        call.input,
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        return_indices,
        mode.temperature_of("max_pool"),
        mode.options.pool,
    )


def _max_pool2d_with_indices(call: Call, mode: Context) -> Any:
    return _max_pool2d(call, mode, return_indices=True)


RULES = (
    SoftenedRule(
        "max_pool",
        (F.max_pool2d, torch.max_pool2d),
        _max_pool2d,
        doc='2-D max pool: gradient of the soft max pool (pool="soft") or its weights ("detached")',
        autograd=(SoftMaxPool2d,),
        nodes=("MaxPool2DWithIndicesBackward",),
    ),
    SoftenedRule(
        "max_pool",
        (F.max_pool2d_with_indices,),
        _max_pool2d_with_indices,
        doc="2-D max pool with indices: the same",
        autograd=(SoftMaxPool2d,),
        nodes=("MaxPool2DWithIndicesBackward",),
    ),
)
