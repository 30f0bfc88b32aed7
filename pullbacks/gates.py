"""The soft gates as autograd functions (METHOD.md §2–3).

Each function computes the ordinary forward pass, bit for bit, and replaces only the
local derivative in the backward pass:

    ReLU                 grad_in = grad_out * s(z / T)
    hardtanh(lo, hi)     grad_in = grad_out * s((z - lo) / T) * s((hi - z) / T)
    LeakyReLU(a)         grad_in = grad_out * (a + (1 - a) s(z / T))
    max pool             grad_in = sum_W grad_out[W] * w_j (1 + (x_j - s_W) / T)   ("soft")
                         grad_in = sum_W grad_out[W] * w_j                         ("detached")

with ``s`` the sigmoid or the standard normal CDF, ``z`` the forward input of that call
and ``w = softmax_W(x / T)`` over each pooling window ``W``.

Cost (METHOD.md §9). All gate arithmetic happens in the backward pass, in as few passes
over memory as possible: ``grad * sigmoid(z / T)`` is exactly the backward of softplus
with ``beta = 1 / T``, one fused kernel. Between forward and backward a gate keeps only
what it needs to know ``z`` again: a :class:`Replay` when ``z`` came out of an eval-mode
batch norm (possibly plus a residual), whose inputs autograd keeps anyway; otherwise
``z`` itself, or a copy when the call overwrites ``z`` in place.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

GATES = ("sigmoid", "normal_cdf")
POOLS = ("soft", "detached")


def _gate_(t: Tensor, gate: str) -> Tensor:
    """Apply the gate ``s`` to ``t`` in place and return it."""
    if gate == "sigmoid":
        return t.sigmoid_()
    # Phi(t) = erfc(-t / sqrt 2) / 2
    return t.mul_(-1.0 / math.sqrt(2.0)).erfc_().mul_(0.5)


def gate_value(z: Tensor, temperature: float, gate: str = "sigmoid") -> Tensor:
    """``s(z / T)`` in a fresh tensor: the soft derivative of ReLU at ``z``."""
    return _gate_(torch.div(z, temperature), gate)


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


# --------------------------------------------------------------------------- replays


class Replay:
    """A recipe that recomputes a tensor bit for bit by re-running the ops that made it.

    ``fn(*values)`` returns the tensor in a fresh buffer; each argument is a tensor (or
    None) or another :class:`Replay`, whose fresh result ``fn`` may overwrite. The mode
    records one for every eval-mode batch norm and for additions onto such outputs: their
    inputs are kept by autograd anyway, so a gate that holds a replay instead of ``z``
    costs no activation-sized buffer, only one recomputation in the backward pass.
    """

    __slots__ = ("fn", "args", "leaves", "versions")

    def __init__(self, fn: Callable[..., Tensor], *args):
        self.fn, self.args = fn, args
        self.leaves = [t for a in args for t in (a.leaves if isinstance(a, Replay) else [a])]
        self.versions = self._versions()

    def _versions(self) -> list:
        return [t._version for t in self.leaves if t is not None]

    def unchanged(self) -> bool:
        """True if no input was modified in place since the replay was recorded."""
        return self._versions() == self.versions

    def keep(self, ctx) -> "Replay":
        """Save the inputs on ``ctx`` (autograd checks they stay unmodified) and return the
        recipe without them."""
        ctx.save_for_backward(*self.leaves)
        return self._stripped()

    def _stripped(self) -> "Replay":
        bare = Replay.__new__(Replay)
        bare.fn, bare.leaves, bare.versions = self.fn, None, None
        bare.args = tuple(a._stripped() if isinstance(a, Replay) else None for a in self.args)
        return bare

    def run(self, leaves: Iterator) -> Tensor:
        """Recompute, taking the inputs from ``leaves`` in the order of ``self.leaves``."""
        return self.fn(*[a.run(leaves) if isinstance(a, Replay) else next(leaves) for a in self.args])


def _batch_norm_eval(x, mean, var, weight, bias, *, eps):
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)


def _add_(fresh, other, *, alpha):
    return fresh.add_(other, alpha=alpha)


def replay_batch_norm(x, mean, var, weight, bias, eps: float) -> Replay:
    """``F.batch_norm(x, mean, var, weight, bias, training=False, eps=eps)``."""
    return Replay(functools.partial(_batch_norm_eval, eps=eps), x, mean, var, weight, bias)


def replay_add(fresh: Replay, other, alpha=1) -> Replay:
    """``fresh + alpha * other`` where ``fresh`` is itself replayed (``other``: a tensor or
    a replay)."""
    return Replay(functools.partial(_add_, alpha=alpha), fresh, other)


def _keep_input(ctx, z: Tensor, inplace: bool, replay: Optional[Replay]) -> None:
    """Keep what the backward pass needs to know ``z``: the replay's inputs if there is
    one, else ``z`` (a copy if the call is about to overwrite it)."""
    if replay is not None:
        ctx.replay = replay.keep(ctx)
    else:
        ctx.replay = None
        ctx.save_for_backward(z.clone() if inplace else z)


def _saved_input(ctx) -> tuple[Tensor, bool]:
    """``z`` again, and whether it sits in a fresh buffer that the backward may overwrite."""
    if ctx.replay is not None:
        return ctx.replay.run(iter(ctx.saved_tensors)), True
    return ctx.saved_tensors[0], False


# ----------------------------------------------------------------------------- gates


class SoftReLU(torch.autograd.Function):
    """``relu(z)`` forward; ``grad * s(z / T)`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, temperature: float, gate: str, inplace: bool, replay: Optional[Replay]):
        ctx.temperature, ctx.gate = temperature, gate
        _keep_input(ctx, z, inplace, replay)
        if inplace:
            ctx.mark_dirty(z)
            return torch.relu_(z)
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, fresh = _saved_input(ctx)
        g = gate_times(grad, z, 1.0 / ctx.temperature, ctx.gate, out=z if fresh else None)
        return g, None, None, None, None


class SoftHardtanh(torch.autograd.Function):
    """``hardtanh(z, lo, hi)`` forward (ReLU6 is ``lo=0, hi=6``);
    ``grad * s((z - lo) / T) * s((hi - z) / T)`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, lo: float, hi: float, temperature: float, gate: str, inplace: bool,
                replay: Optional[Replay]):
        ctx.lo, ctx.hi, ctx.temperature, ctx.gate = lo, hi, temperature, gate
        _keep_input(ctx, z, inplace, replay)
        if inplace:
            ctx.mark_dirty(z)
            return F.hardtanh(z, lo, hi, inplace=True)
        return F.hardtanh(z, lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, fresh = _saved_input(ctx)
        beta = 1.0 / ctx.temperature
        lower = gate_times(grad, z - ctx.lo if ctx.lo else z, beta, ctx.gate)
        above = z.sub_(ctx.hi) if fresh else z - ctx.hi  # s((hi - z) / T) = s(-(z - hi) / T)
        return gate_times(lower, above, -beta, ctx.gate, out=above), None, None, None, None, None, None


class SoftLeakyReLU(torch.autograd.Function):
    """``leaky_relu(z, a)`` forward; ``grad * (a + (1 - a) s(z / T))`` backward."""

    @staticmethod
    def forward(ctx, z: Tensor, slope: float, temperature: float, gate: str, inplace: bool,
                replay: Optional[Replay]):
        ctx.slope, ctx.temperature, ctx.gate = slope, temperature, gate
        _keep_input(ctx, z, inplace, replay)
        if inplace:
            ctx.mark_dirty(z)
            return F.leaky_relu(z, slope, inplace=True)
        return F.leaky_relu(z, slope)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, fresh = _saved_input(ctx)
        a = ctx.slope
        g = gate_times(grad, z, 1.0 / ctx.temperature, ctx.gate, out=z if fresh else None)
        return g.mul_(1.0 - a).add_(grad, alpha=a), None, None, None, None, None


def _pair(v) -> tuple[int, int]:
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
    t[..., rows.stop:, :].fill_(value)
    t[..., rows, : cols.start].fill_(value)
    t[..., rows, cols.stop:].fill_(value)


_POOL_BLOCK_BYTES = 8 << 20  # window entries per block: about a cache's worth, and small
                             # enough for the allocator to reuse one block's memory for the next


def _blocks(n: int, c: int, plane_bytes: int):
    """``(batch, channel)`` slices covering ``n x c`` planes, about ``_POOL_BLOCK_BYTES`` each."""
    planes = max(1, _POOL_BLOCK_BYTES // max(plane_bytes, 1))
    nb, cb = (max(1, planes // c), c) if planes >= c else (1, planes)
    return [(slice(b, b + nb), slice(ch, ch + cb)) for b in range(0, n, nb) for ch in range(0, c, cb)]


def _soft_pool_local(x: Tensor, grad_out: Tensor, spans, temperature: float, variant: str) -> Tensor:
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
    if variant == "detached":
        return e.mul_(scale)
    eu = u.mul_(e)
    shift = eu.sum(0).div_(total).neg_().add_(1.0).mul_(scale)  # (1 - Q / S) * scale
    return eu.mul_(scale).addcmul_(e, shift)


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

    Block by block (a few MiB of window entries, so the passes below stay in cache), the
    window entries are copied out of ``x`` offset by offset into a ``(kh * kw, n, c, h_out,
    w_out)`` buffer, ``-inf`` where a window reaches past ``x`` (``padding``, ``ceil_mode``).
    With ``u_j = (x_j - max_W x) / T``, ``e_j = exp(u_j)``, ``S = sum_W e`` and
    ``Q = sum_W e u`` (so ``w_j = e_j / S`` and ``(x_j - s_W) / T = u_j - Q / S``):

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
    spans = [(_offset_span(h, h_out, i * d[0] - p[0], s[0]), _offset_span(w, w_out, j * d[1] - p[1], s[1]))
             for i in range(k[0]) for j in range(k[1])]
    # windows that tile x exactly (VGG's 2x2 pools) write every input position once
    tiles = s == k and p == (0, 0) and d == (1, 1) and (h, w) == (h_out * k[0], w_out * k[1])
    grad = torch.empty_like(x) if tiles else torch.zeros_like(x)
    for block in _blocks(n, c, len(spans) * h_out * w_out * x.element_size()):
        local = _soft_pool_local(x[block], grad_out[block], spans, temperature, variant)
        g = grad[block]
        for dj, ((r_out, r_in), (c_out, c_in)) in zip(local, spans):
            target = g[:, :, r_in, c_in]
            target.copy_(dj[:, :, r_out, c_out]) if tiles else target.add_(dj[:, :, r_out, c_out])
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

