"""Module rules: rules for module classes whose forward is written out of elementary calls.

Hugging Face and research code often write a norm or a GELU by hand (Llama's RMSNorm is
``w * (x * rsqrt(mean(x²) + eps))``, GPT-2's GELU ``0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))``).
The mode sees only the elementary calls, none of which is the operator a function rule
names; a :class:`ModuleRule` names the module classes instead.

While a soft-gate block is active, a module whose class a module rule names runs its own
forward as always; then the rule's ``run(module, x, T)`` is evaluated on the module's input
``x``: a function whose *gradient* is the rule's backward and whose *value* is the module's
output. The value is compared with the output the module returned (the behaviour check):
a module the rule does not recognise keeps its own forward and backward, its elementary
calls are counted as they came (so an ungated norm is reported, never hidden), and the
report names it. A recognised module's output is its own, bit for bit, with the backward
of ``run``; its inner calls are not counted (the rule covers them). The check runs at the
module's first call in a block, without a graph; ``run`` is evaluated again in the backward
pass, so the forward pass keeps only ``x`` for it.

``through(value, soft)`` writes a straight-through expression: the value of ``value``,
the gradient of ``soft`` (the authors' follow-up code writes every rule this way).

    tanh GELU  run = through(x·s(x), x·s(x/T).detach()),  s(u) = ½(1 + tanh(√(2/π)(u + 0.044715u³)))
    QuickGELU  run = through(x·s(x), x·s(x/T).detach()),  s(u) = sigmoid(1.702u)
    RMSNorm    run = w · x / sqrt(mean(x.detach()²) + eps)  (Gemma: (1 + w) · ...)

so ``grad_in = grad_out · s(x/T)`` for the GELUs and ``grad_out · w / rms`` for the norm
(statistics held), the rules of the function forms (``F.gelu``, ``F.rms_norm``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from .base import Rule, _check_rule, flush_subnormals_
from .norm import _stats_dtype


def through(value: Tensor, soft: Tensor) -> Tensor:
    """The value of ``value`` (to rounding) with the gradient of ``soft``: ``soft + (value - soft).detach()``."""
    return soft + (value - soft).detach()


def _in_torch(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "torch"


@dataclass(frozen=True, eq=False)
class ModuleRule(Rule):
    """A rule for module classes (see the module docstring).

    family       the family's name (coverage report, ``temperatures={family: T}``)
    classes      module classes, or class-name patterns (``"*RMSNorm"``, fnmatch syntax); a pattern
                 never matches torch's own classes (they call the functions the function rules name)
    run          ``run(module, x, T) -> Tensor``: the module's output as a function of its input ``x``
                 whose gradient is the rule's backward (``through`` helps); evaluated once per call
    temperature  the default ``T`` (None: the built-in family's, or no temperature)
    doc          one line for the docs table
    override     a rule in a built-in family may change its default temperature only with ``override=True``

    The module's forward takes one tensor (by position or as its only keyword) and returns one
    tensor; the output stays the module's own, bit for bit.
    """

    family: str
    classes: tuple[type | str, ...]
    run: Callable[[nn.Module, Tensor, float], Tensor]
    temperature: float | None = None
    doc: str = ""
    override: bool = False

    def __post_init__(self) -> None:
        name = f"ModuleRule({self.family!r})"
        if isinstance(self.classes, (str, type)):
            object.__setattr__(self, "classes", (self.classes,))
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))
        if not self.classes or not all(
            isinstance(c, str) or (isinstance(c, type) and issubclass(c, nn.Module)) for c in self.classes
        ):
            raise TypeError(
                f"{name}.classes must be module classes or class-name patterns such as '*RMSNorm', got {self.classes!r}"
            )
        if not callable(self.run) or isinstance(self.run, type):
            raise TypeError(f"{name}.run must be a function run(module, x, T), got {self.run!r}")
        object.__setattr__(self, "functions", ())
        _check_rule(self)

    def matches(self, cls: type) -> bool:
        """Whether this rule names ``cls`` (a class, or a pattern of its name outside torch)."""
        for c in self.classes:
            if isinstance(c, type):
                if issubclass(cls, c):
                    return True
            elif not _in_torch(cls) and fnmatch.fnmatchcase(cls.__name__, c):
                return True
        return False

    def apply(  # type: ignore[override]  # applied by the module hooks to a module's output, not to a call
        self, module: nn.Module, x: Tensor, output: Tensor, t: float, check: bool = True
    ) -> tuple[Tensor | None, str]:
        """``(output with the rule's backward, "")``, or ``(None, why)`` when the module is not recognised.
        ``check``: compare ``run``'s value with ``output`` first (without a graph); ``False`` once the
        module was recognised in the same block, which spares a forward of ``run`` and a device
        synchronisation per call. ``run`` itself is evaluated in the backward pass."""
        if check:
            why = self._differs(module, x, output, t)
            if why:
                return None, why
        return Straight.apply(self, module, t, output.detach(), x, *module.parameters()), ""

    def _differs(self, module: nn.Module, x: Tensor, output: Tensor, t: float) -> str:
        """Why ``run`` does not compute ``module``'s output (empty: it does, to the dtype's precision)."""
        try:
            with torch.no_grad(), torch._C.DisableTorchFunction():
                soft = self.run(module, x, t)
        except Exception as e:  # a module of another form (no weight, another signature): not this rule's
            return f"{type(e).__name__}: {e}"
        if not isinstance(soft, Tensor) or soft.shape != output.shape:
            return f"run gave {getattr(soft, 'shape', type(soft).__name__)} for an output of {tuple(output.shape)}"
        eps = max(torch.finfo(output.dtype).eps * 16, 1e-6)
        scale = float(output.detach().abs().max()) if output.numel() else 0.0
        gap = (soft.to(output.dtype) - output.detach()).abs()
        if not bool((gap <= eps * output.detach().abs() + eps * scale).all()):
            return f"its output differs from the rule's formula by up to {float(gap.max()):.3g}"
        return ""


class Straight(torch.autograd.Function):
    """Forward: the module's own output, bit for bit; backward: the gradient of ``rule.run(module, x, T)``
    with respect to ``x`` and the module's parameters, ``run`` re-evaluated there (nothing of it is
    computed or kept in the forward pass but ``x``)."""

    @staticmethod
    def forward(
        ctx: Any, rule: ModuleRule, module: nn.Module, t: float, output: Tensor, x: Tensor, *params: Tensor
    ) -> Tensor:
        ctx.rule, ctx.module, ctx.t = rule, module, t
        ctx.save_for_backward(x)
        return output.view_as(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        params = list(ctx.module.parameters())
        need_x = ctx.needs_input_grad[4]
        wanted = [p for p, n in zip(params, ctx.needs_input_grad[5:]) if n]
        with torch.enable_grad(), torch._C.DisableTorchFunction():
            xs = x.detach().requires_grad_(need_x)
            soft = ctx.rule.run(ctx.module, xs, ctx.t)
            wrt = ([xs] if need_x else []) + wanted
            found = iter(
                torch.autograd.grad(soft, wrt, grad, allow_unused=True)
                if wrt and soft.requires_grad
                else [None] * len(wrt)
            )
        g_x = flush_subnormals_(next(found)) if need_x else None
        g_params = [next(found) if n else None for n in ctx.needs_input_grad[5:]]
        return (None, None, None, None, g_x, *g_params)


# ----------------------------------------------------------------------------- the built-in rules


def _tanh_gate(u: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u.pow(3))))


def _quick_gate(u: Tensor) -> Tensor:
    return torch.sigmoid(1.702 * u)


def _erf_gate(u: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(u / math.sqrt(2.0)))


def gelu_run(gate: Callable[[Tensor], Tensor]) -> Callable[[nn.Module, Tensor, float], Tensor]:
    """``run`` of an ``x · s(x)`` module with gate ``s``: value ``x·s(x)``, gradient ``s(x/T)``."""

    def run(module: nn.Module, x: Tensor, t: float) -> Tensor:
        return through(x * gate(x), x * gate(x / t).detach())

    return run


def _eps(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        if isinstance(getattr(module, name, None), (int, float)):
            return float(getattr(module, name))
    raise AttributeError(f"{type(module).__name__} has no eps (variance_epsilon, eps, epsilon)")


def held_rms(module: nn.Module, x: Tensor, t: float) -> Tensor:
    """An RMSNorm written out: ``w · x / sqrt(mean(x²) + eps)``, the root mean square held (computed in
    float32 for half-precision inputs, as the modules do, and in the input's dtype otherwise)."""
    x32 = x.to(_stats_dtype(x))
    normed = x32 * torch.rsqrt(x32.detach().pow(2).mean(-1, keepdim=True) + _eps(module))
    w = getattr(module, "weight", None)
    if w is None:
        return normed.to(x.dtype)
    return w * normed.to(w.dtype if w.dtype in (torch.float16, torch.bfloat16) else x.dtype)


def held_rms_offset(module: nn.Module, x: Tensor, t: float) -> Tensor:
    """Gemma's RMSNorm: ``(1 + w) · x / rms``, the root mean square held."""
    x32 = x.to(_stats_dtype(x))
    normed = x32 * torch.rsqrt(x32.detach().pow(2).mean(-1, keepdim=True) + _eps(module))
    weight = cast(Tensor, module.weight)
    return (normed * (1.0 + weight.to(normed.dtype))).to(x.dtype)


def held_layer(module: nn.Module, x: Tensor, t: float) -> Tensor:
    """A layer norm written out: ``(x - mean) / sqrt(var + eps) · w + b``, mean and variance held.
    Not matched by name (hand-written layer norms have no common name): name your class,
    ``ModuleRule("norm", (MyLayerNorm,), held_layer)``."""
    xs = x.to(_stats_dtype(x))
    var, mean = torch.var_mean(xs.detach(), dim=-1, keepdim=True, correction=0)
    y = ((xs - mean) * torch.rsqrt(var + _eps(module))).to(x.dtype)
    w, b = getattr(module, "weight", None), getattr(module, "bias", None)
    y = y * w if w is not None else y
    return y + b if b is not None else y


RMS_CLASSES = ("*RMSNorm", "T5LayerNorm")
TANH_GELU_CLASSES = (
    "NewGELUActivation",
    "FastGELUActivation",
    "AccurateGELUActivation",
    "GELUTanh",
    "GELUPytorchTanh",
    "PytorchGELUTanh",
)
QUICK_GELU_CLASSES = ("QuickGELUActivation", "QuickGELU")
ERF_GELU_CLASSES = ("GELUActivation",)

RULES = (
    ModuleRule(
        "norm",
        RMS_CLASSES,
        held_rms,
        doc="RMSNorm written out (Llama, Qwen2, Mistral, T5: classes `*RMSNorm`, `T5LayerNorm`): the "
        "root mean square held",
    ),
    ModuleRule(
        "norm", ("Gemma*RMSNorm",), held_rms_offset, doc="Gemma's RMSNorm `(1 + w)·x/rms`: the root mean square held"
    ),
    ModuleRule(
        "gelu",
        TANH_GELU_CLASSES,
        gelu_run(_tanh_gate),
        doc="tanh GELU written out (GPT-2's `NewGELUActivation`, ...): gate s(z/T), s its tanh form",
    ),
    ModuleRule("gelu", QUICK_GELU_CLASSES, gelu_run(_quick_gate), doc="QuickGELU z·σ(1.702z) (CLIP): gate σ(1.702z/T)"),
    ModuleRule(
        "gelu",
        ERF_GELU_CLASSES,
        gelu_run(_erf_gate),
        doc="GELU module, also written out with erf (`GELUActivation`): gate Φ(z/T)",
    ),
)
