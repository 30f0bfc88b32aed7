"""A slow reference for the soft gates, built by a different mechanism than the package.

Instead of a TorchFunctionMode and hand-written backward formulas, a copy of the model has
its activation and pooling modules *replaced*, and ``torch.nn.functional.relu`` is
*patched*, by straight-through surrogates: ``out = f(z) + (S(z) - S(z).detach())`` where
autograd differentiates a smooth ``S`` whose derivative is the soft gate. The forward value
is ``f(z)`` exactly; the backward pass is whatever autograd makes of ``S``.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def antiderivative(z, t, gate):
    """``S`` with ``S'(z) = s(z / t)``."""
    if gate == "sigmoid":
        return t * torch.logaddexp(torch.zeros_like(z), z / t)
    u = z / t
    phi = torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(u / math.sqrt(2)))
    return z * cdf + t * phi


def straight_through(value, surrogate):
    return value.detach() + (surrogate - surrogate.detach())


def ref_relu(z, t, gate):
    return straight_through(torch.clamp(z, min=0), antiderivative(z, t, gate))


def ref_soft_pool(x, kernel_size, stride, padding, dilation, ceil_mode, t, variant):
    """Soft max pool ``sum_j softmax(x/t)_j x_j`` per window, windows gathered by explicit
    strided slicing over the kernel offsets (no unfold), padding as -inf."""

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    k, s, p, d = pair(kernel_size), pair(stride if stride else kernel_size), pair(padding), pair(dilation)
    h_out, w_out = F.max_pool2d(x.detach(), k, s, p, d, ceil_mode).shape[-2:]
    big_h = (h_out - 1) * s[0] + d[0] * (k[0] - 1) + 1 + p[0]
    big_w = (w_out - 1) * s[1] + d[1] * (k[1] - 1) + 1 + p[1]
    xp = F.pad(
        x,
        (p[1], max(big_w - x.shape[-1] - p[1], 0) + p[1], p[0], max(big_h - x.shape[-2] - p[0], 0) + p[0]),
        value=float("-inf"),
    )
    entries = []
    for i in range(k[0]):
        for j in range(k[1]):
            r0, c0 = i * d[0], j * d[1]
            entries.append(xp[..., r0 : r0 + (h_out - 1) * s[0] + 1 : s[0], c0 : c0 + (w_out - 1) * s[1] + 1 : s[1]])
    win = torch.stack(entries, dim=-1)
    w = torch.softmax(win / t, dim=-1)
    if variant == "detached":
        w = w.detach()
    finite = torch.where(torch.isinf(win), torch.zeros_like(win), win)
    return (w * finite).sum(-1)


class RefReLU(nn.Module):
    def __init__(self, t, gate):
        super().__init__()
        self.t, self.gate = t, gate

    def forward(self, z):
        return ref_relu(z, self.t, self.gate)


class RefMaxPool(nn.Module):
    def __init__(self, pool: nn.MaxPool2d, t, variant):
        super().__init__()
        self.pool, self.t, self.variant = pool, t, variant

    def forward(self, x):
        p = self.pool
        value = F.max_pool2d(x, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode)
        soft = ref_soft_pool(x, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode, self.t, self.variant)
        return straight_through(value, soft)


def reference_model(
    model: nn.Module, t: float, gate: str = "sigmoid", pool_t: float | None = None, pool: str = "soft"
) -> nn.Module:
    """A deep copy of ``model`` with every ReLU/MaxPool2d module replaced by a surrogate."""
    ref = copy.deepcopy(model)
    for parent in list(ref.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, RefReLU(t, gate))
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, RefMaxPool(child, pool_t or t, pool))
    return ref


@contextmanager
def patched_functional_relu(t: float, gate: str = "sigmoid"):
    """Patch ``F.relu`` by hand (DenseNet calls it directly in ``forward``)."""
    original = F.relu
    F.relu = lambda z, inplace=False: ref_relu(z, t, gate)
    try:
        yield
    finally:
        F.relu = original


def reference_pullback(model, x, targets, t, gate="sigmoid", pool_t=None, pool="soft"):
    ref = reference_model(model, t, gate, pool_t, pool)
    x = x.detach().clone().requires_grad_(True)
    with patched_functional_relu(t, gate):
        logits = ref(x)
    logits.gather(1, torch.as_tensor(targets)[:, None]).sum().backward()
    return x.grad


def slow_soft_pool_grad(x, grad_out, k, s_, p, d, ceil_mode, t, variant):
    """docs/method.md, "The pool", by explicit loops over windows and their entries."""
    n, c, h, w = x.shape
    h_out, w_out = grad_out.shape[-2:]
    grad = torch.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(h_out):
                for j in range(w_out):
                    pos = [
                        (i * s_[0] - p[0] + a * d[0], j * s_[1] - p[1] + e * d[1])
                        for a in range(k[0])
                        for e in range(k[1])
                    ]
                    pos = [(r, q) for r, q in pos if 0 <= r < h and 0 <= q < w]
                    vals = torch.stack([x[b, ch, r, q] for r, q in pos])
                    wts = torch.softmax(vals / t, 0)
                    sw = (wts * vals).sum()
                    der = wts * (1 + (vals - sw) / t) if variant == "soft" else wts
                    for (r, q), dv in zip(pos, der):
                        grad[b, ch, r, q] += grad_out[b, ch, i, j] * dv
    return grad


POOL_CASES = [
    dict(kernel_size=3, stride=2, padding=1),  # ResNet's stem
    dict(kernel_size=2, stride=2),  # VGG
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=1, padding=(1, 0), dilation=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),
]
