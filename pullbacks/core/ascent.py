"""``gradient_ascent()``: projected, L2-normalised gradient ascent in input space.

d = d/dx sum_i logits[i, target_i]                (pullback or vanilla gradient)
x = x + alpha * d / max(||d||, 1e-20)             per sample, over all non-batch dims
x = x0 + (x - x0) * min(1, eps / ||x - x0||)      if eps is not None
x = clamp(x, lo, hi)                              if clip is not None
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from .checks import Targets, as_target_tensor, check_in_range, check_inputs, check_model
from .options import AscentOptions, GateOptions, build
from .policy import CoverageCheck
from .pullback import target_gradient


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def ascent_steps(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets,
    options: GateOptions | None = None,
    **overrides: Any,
) -> Iterator[Tensor]:
    """The ascent of :func:`gradient_ascent` one step at a time: yields ``x`` after each
    step (so a caller can show progress, or stop between steps by no longer iterating).
    Everything is validated before the first step."""
    o = build(AscentOptions, options, overrides)
    check_model(model)
    check_inputs(inputs)
    check_in_range(inputs, o.clip)
    t = as_target_tensor(targets, inputs.shape[0], inputs.device)
    return _steps(model, inputs, t, o)


def _steps(model: nn.Module, inputs: Tensor, t: Tensor, o: AscentOptions) -> Iterator[Tensor]:
    gates = o.gates if o.method == "pullback" else None
    check = CoverageCheck(o.strict, o.rules)  # one for the whole ascent: it warns once
    x0 = inputs.clone() if inputs.is_inference() else inputs.detach()
    x = x0.clone()
    for _ in range(o.steps):
        d = target_gradient(model, x, t, gates, check)
        x = x + o.alpha * d / _per_sample_norm(d).clamp_min(1e-20)
        if o.eps is not None:
            delta = x - x0
            x = x0 + delta * (o.eps / _per_sample_norm(delta)).clamp(max=1.0)
        if o.clip is not None:
            x = x.clamp(*o.clip)
        yield x


def gradient_ascent(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets,
    options: AscentOptions | None = None,
    *,
    progress: bool = False,
    **overrides: Any,
) -> Tensor:
    """Return ``inputs`` after ``steps`` steps of projected gradient ascent on the target
    logits, along the excitation pullback (``method="pullback"``) or the vanilla gradient
    (``method="gradient"``).

    Options: an :class:`AscentOptions` and/or its fields as keywords (``steps=5``,
    ``alpha=20``, ``eps=100`` or None, ``clip=(-1, 1)`` or None, ``method``, and the gate
    options ``recipe``, ``temperature``, ``pool_temperature``, ``temperatures``, ``variants``,
    ``rules``, ``gate``, ``pool``, ``strict``, ``replay``; see :func:`excitation_pullback` for
    the coverage warning). Each sample is independent of the rest of its batch. The
    attribution the paper shows is ``result - inputs``. ``progress=True`` shows a bar over
    the steps. :func:`ascent_steps` gives the same ascent one step at a time.
    """
    o = build(AscentOptions, options, overrides)
    steps = ascent_steps(model, inputs, targets, o)
    x = inputs
    for step in tqdm(steps, total=o.steps, desc=f"{o.method} ascent", unit="step", disable=not progress, leave=False):
        x = step
    return x
