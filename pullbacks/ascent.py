"""``gradient_ascent()``: projected, L2-normalised gradient ascent in input space (METHOD.md §5).

    d = d/dx sum_i logits[i, target_i]                (pullback or vanilla gradient)
    x = x + alpha * d / max(||d||, 1e-20)             per sample, over all non-batch dims
    x = x0 + (x - x0) * min(1, eps / ||x - x0||)      if eps is not None
    x = clamp(x, lo, hi)                              if clip is not None
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .checks import Targets, as_target_tensor, check_inputs, check_model, check_positive
from .mode import make_mode
from .pullback import target_gradient

METHODS = ("pullback", "gradient")


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def _check_clip(clip) -> Optional[Tuple[float, float]]:
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise TypeError(f"clip must be None or a pair (low, high), got {clip!r}") from None
    if not lo < hi:
        raise ValueError(f"clip must satisfy low < high, got {clip!r}")
    return lo, hi


def gradient_ascent(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets,
    *,
    steps: int = 5,
    alpha: float = 20.0,
    eps: float | None = 100.0,
    clip: Tuple[float, float] | None = (-1.0, 1.0),
    method: str = "pullback",
    temperature: float = 0.3,
    pool_temperature: float | None = None,
    gate: str = "sigmoid",
    pool: str = "soft",
) -> Tensor:
    """Return ``inputs`` after ``steps`` steps of projected gradient ascent on the target
    logits, along the excitation pullback (``method="pullback"``) or the vanilla gradient
    (``method="gradient"``). ``eps=None`` / ``clip=None`` switch projection / clipping off.
    Each sample is independent of the rest of its batch. The attribution the paper shows
    is ``result - inputs``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    steps = _check_steps(steps)
    alpha = check_positive(alpha, "alpha")
    eps = check_positive(eps, "eps", allow_none=True)
    clip = _check_clip(clip)
    make_mode(temperature, pool_temperature, gate, pool)  # validate even for "gradient"
    check_model(model)
    check_inputs(inputs)
    t = as_target_tensor(targets, inputs.shape[0], inputs.device)

    x0 = inputs.detach()
    x = x0.clone()
    for _ in range(steps):
        mode = make_mode(temperature, pool_temperature, gate, pool) if method == "pullback" else None
        d = target_gradient(model, x, t, mode)
        x = x + alpha * d / _per_sample_norm(d).clamp_min(1e-20)
        if eps is not None:
            delta = x - x0
            x = x0 + delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)
        if clip is not None:
            x = x.clamp(*clip)
    return x
