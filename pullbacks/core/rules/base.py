"""What a rule is: the torch functions it intercepts, and how it applies its soft backward.

A :class:`Rule` covers one family of operators. The mode (``soft_gates``) looks every
call up in the table of rules (:data:`pullbacks.core.table.TABLE`); a hit whose input
needs a gradient becomes ``rule.apply(call, mode)``, which computes the ordinary forward
value bit for bit through an autograd function with the rule's backward.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor


def arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    """Argument ``index`` of a call, given by position or by ``name``."""
    return args[index] if len(args) > index else kwargs.get(name, default)


@functools.lru_cache(maxsize=None)
def _smallest_normal(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def flush_subnormals_(t: Tensor) -> Tensor:
    """Set the entries of ``t`` below the smallest normal float (in magnitude) to 0, in place.

    Soft gates make subnormal floats where hard gates make exact zeros (``sigmoid(z / T)``
    for ``z / T < -87`` in float32, and products of small gates), and on many x86 CPUs
    arithmetic on subnormals is tens of times slower: the convolution backward that
    consumes them slows down the whole step. One pass over the gate's output removes them
    without touching the process's floating-point mode. The pullback changes only below
    ``finfo.tiny`` (1.2e-38 in float32). GPUs have no such penalty: there ``t`` is returned
    as it is.
    """
    if t is None or t.device.type != "cpu" or not t.is_floating_point():
        return t
    return torch.hardshrink(t, _smallest_normal(t.dtype), out=t)


class Call:
    """One intercepted call: its arguments, and whether its form always works in place."""

    __slots__ = ("args", "kwargs", "inplace")

    def __init__(self, args: tuple, kwargs: dict, inplace: bool) -> None:
        self.args, self.kwargs, self.inplace = args, kwargs, inplace

    @property
    def input(self) -> Any:
        return self.args[0] if self.args else self.kwargs.get("input", self.kwargs.get("self"))

    def arg(self, index: int, name: str, default: Any) -> Any:
        return arg(self.args, self.kwargs, index, name, default)

    def writes_input(self, index: Optional[int] = None) -> bool:
        """True if the call overwrites its input: an in-place form, or ``inplace=True``
        (argument ``index``)."""
        return self.inplace or (index is not None and bool(self.arg(index, "inplace", False)))


@dataclass(frozen=True)
class Rule:
    """A family of operators with one backward rule.

    family            the name the coverage report counts it under
    functions         the torch functions it intercepts (module forms call these too)
    inplace_functions the forms that always overwrite their input (``torch.relu_``, ...)
    apply             ``apply(call, mode) -> output``: the forward value, with the soft backward
    """

    family: str
    functions: tuple[Callable, ...]
    inplace_functions: tuple[Callable, ...]
    apply: Callable[[Call, Any], Any]


def soften(mode, ordinary: Callable, softened: Callable, *tensors):
    """``Softened.apply``, told which tensors' gradients can be wanted: with ``mode.wrt``
    set (the pullback asks for the input gradient alone), leaves other than those inputs
    (the parameters) get none, which spares their weight-gradient work."""
    return Softened.apply(ordinary, softened, wanted(mode, tensors), *tensors)


def wanted(mode, tensors) -> tuple[bool, ...]:
    """For each of ``tensors``: may its gradient be asked for? Not when it is a leaf other
    than the inputs the mode's ``wrt`` names (a parameter, while the pullback wants the
    input gradient alone)."""
    wrt = getattr(mode, "wrt", None)
    return tuple(isinstance(t, Tensor) and (wrt is None or not t.is_leaf or any(t is w for w in wrt))
                 for t in tensors)


class Softened(torch.autograd.Function):
    """Forward ``ordinary(*tensors)`` bit for bit; backward: the gradient that ``tensors``
    would get from ``softened(*tensors)``, recomputed in the backward pass.

    For rules whose soft backward is easiest written as a different forward (norms with
    their statistics held constant, a softer attention). ``tensors`` may hold None; the
    output may be a tensor or a tuple of tensors and None. Torch-function modes are off
    while the softened forward runs, so a soft-gate block around the backward pass does
    not intercept it a second time.
    """

    @staticmethod
    def forward(ctx, ordinary: Callable, softened: Callable, keep: tuple, *tensors):
        ctx.softened, ctx.keep = softened, keep
        ctx.save_for_backward(*tensors)
        out = ordinary(*tensors)
        if isinstance(out, tuple):
            ctx.mark_non_differentiable(*[o for o in out if isinstance(o, Tensor) and not o.is_floating_point()])
        return out

    @staticmethod
    def backward(ctx, *grads):
        need = [bool(n) and k for n, k in zip(ctx.needs_input_grad[3:], ctx.keep)]
        with torch.enable_grad(), torch._C.DisableTorchFunction():
            inputs = [t.detach().requires_grad_(n) if isinstance(t, Tensor) and n else t
                      for t, n in zip(ctx.saved_tensors, need)]
            out = ctx.softened(*inputs)
            outs = out if isinstance(out, tuple) else (out,)
            pairs = [(o, g) for o, g in zip(outs, grads)
                     if isinstance(o, Tensor) and o.requires_grad and g is not None]
            wrt = [t for t, n in zip(inputs, need) if n]
            found = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
                         if pairs and wrt else [None] * len(wrt))
        return (None, None, None, *[flush_subnormals_(next(found)) if n else None for n in need])
