"""What a rule is: the torch functions it intercepts, and how it gives them a soft backward.

Every rule has a ``family`` (the name the coverage report counts it under and that
``temperatures={...}`` sets), the ``functions`` it intercepts (module forms call these
too), the ``inplace_functions`` that always overwrite their input, its default
``temperature`` and a one-line ``doc``. It also declares what it leaves behind, so that
coverage reads everything from the rules in effect: ``autograd``, the
``torch.autograd.Function`` classes its backward uses (beyond the package's two generic
ones), and ``nodes``, the backward-node names of the hard operators it replaces (met in a
graph, the call ran where the mode could not see it). The mode (``soft_gates``) looks every call up in
the table of rules; a hit whose input needs a gradient becomes ``rule.apply(call, mode)``,
which returns the ordinary forward value, bit for bit, with the rule's backward.

Two kinds:

* :class:`GateRule` — an elementwise operator ``y = f(z)``: forward ``f``, backward
  ``grad_in = grad_out * gate(z, T)``. One generic autograd function serves them all.
  This is the kind users write (``docs/extending.md``).
* :class:`SoftenedRule` — anything else (max pool, norms, attention): its own ``run``.

What a rule may ask of the mode (the :class:`Context` it is applied in) is declared below.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor

from ..calls import Call
from ..replay import keep_input, saved_input

# dtypes whose subnormal floats are below anything a pullback resolves: float16 keeps its
# subnormals (its smallest normal, 6.1e-5, is an ordinary gradient value)
_FLUSHED = {torch.float32: torch.finfo(torch.float32).tiny, torch.float64: torch.finfo(torch.float64).tiny}


def flush_subnormals_(t: Tensor | None) -> Tensor | None:
    """Set the subnormal entries of a float32/float64 CPU tensor to 0, in place.

    Soft gates make subnormal floats where hard gates make exact zeros (``sigmoid(z / T)``
    for ``z / T < -87`` in float32, and products of small gates), and on many x86 CPUs
    arithmetic on subnormals is tens of times slower: the convolution backward that
    consumes them slows down the whole step. One pass over the gate's output removes them
    without touching the process's floating-point mode; the pullback changes only below
    ``finfo.tiny`` (1.2e-38 in float32). float16 and bfloat16 are left alone (float16's
    subnormals are real gradient values), and so are GPU tensors (no such penalty there).
    """
    if t is None or t.device.type != "cpu":
        return t
    tiny = _FLUSHED.get(t.dtype)
    return t if tiny is None else torch.hardshrink(t, tiny, out=t)


class Context(Protocol):
    """What a rule may use of the mode it is applied in."""

    options: Any  # the GateOptions in effect (read-only)

    def temperature_of(self, family: str) -> float:
        """The temperature of ``family`` in effect."""

    def replay(self, z: Tensor) -> Any:
        """A recipe that recomputes ``z`` in the backward pass (see ``replay.py``), or None."""

    def wanted(self, tensors: tuple) -> tuple[bool, ...]:
        """For each of ``tensors``: may its gradient be asked for?"""


# families whose temperature has a keyword of its own (the others go through temperatures={...})
KEYWORDS = {"relu": "temperature", "max_pool": "pool_temperature"}


class Rule:
    """The interface every rule has (see the module docstring)."""

    family: str
    functions: tuple[Callable, ...]
    inplace_functions: tuple[Callable, ...] = ()
    temperature: float | None = None
    doc: str = ""
    autograd: tuple[type, ...] = ()
    nodes: tuple[str, ...] = ()
    override: bool = False

    def apply(self, call: Call, mode: Context) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


def _check_rule(rule: Rule) -> None:
    if not isinstance(rule.family, str) or not rule.family.isidentifier():
        raise ValueError(f"a rule's family must be a name such as 'elu', got {rule.family!r}")
    name = f"{type(rule).__name__}({rule.family!r})"
    for what in ("functions", "inplace_functions", "autograd", "nodes"):
        if isinstance(getattr(rule, what), list):
            object.__setattr__(rule, what, tuple(getattr(rule, what)))
    for what in ("functions", "inplace_functions"):
        value = getattr(rule, what)
        if not isinstance(value, tuple) or not all(callable(f) for f in value):
            raise TypeError(f"{name}.{what} must be a tuple of torch functions, got {value!r}")
        classes = [f for f in value if isinstance(f, type)]
        if classes:
            raise TypeError(
                f"{name}.{what} holds the class {classes[0].__name__}: name the torch function its "
                "modules call (F.elu for nn.ELU), not a module class; the mode sees function calls"
            )
    if not rule.functions and not rule.inplace_functions and not getattr(rule, "classes", ()):
        raise ValueError(f"{name} intercepts no function: pass functions=(F.elu,)")
    if not isinstance(rule.autograd, tuple) or not all(
        isinstance(f, type) and issubclass(f, torch.autograd.Function) for f in rule.autograd
    ):
        raise TypeError(
            f"{name}.autograd must be a tuple of torch.autograd.Function classes (those its backward "
            f"uses), got {rule.autograd!r}"
        )
    if not isinstance(rule.nodes, tuple) or not all(isinstance(n, str) and n for n in rule.nodes):
        raise TypeError(
            f"{name}.nodes must be a tuple of backward-node names such as 'EluBackward0', got {rule.nodes!r}"
        )
    if not isinstance(rule.override, bool):
        raise TypeError(f"{name}.override must be True or False, got {rule.override!r}")
    if rule.temperature is not None:
        from ..validators import temperature

        object.__setattr__(rule, "temperature", temperature(rule.temperature, f"{rule.family} temperature"))


@dataclass(frozen=True, eq=False)
class SoftenedRule(Rule):
    """A rule with its own ``run(call, mode) -> output`` (max pool, norms, attention).

    A rule with several forms names them: ``name`` is how ``variants={name: ...}`` (and a
    recipe) chooses one, ``run`` is the variant ``"soft"``, ``variants`` the others as
    ``(variant, run, doc)``."""

    family: str
    functions: tuple[Callable, ...]
    run: Callable[[Call, Context], Any]
    temperature: float | None = None
    inplace_functions: tuple[Callable, ...] = ()
    doc: str = ""
    name: str = ""
    variants: tuple[tuple[str, Callable[[Call, Context], Any], str], ...] = ()
    autograd: tuple[type, ...] = ()
    nodes: tuple[str, ...] = ()
    override: bool = False

    def __post_init__(self) -> None:
        if not callable(self.run):
            raise TypeError(f"SoftenedRule({self.family!r}).run must be a function run(call, mode), got {self.run!r}")
        _check_rule(self)
        if self.variants and not self.name:
            raise ValueError(f"SoftenedRule({self.family!r}) has variants but no name to choose them by")

    def apply(self, call: Call, mode: Context) -> Any:
        if self.variants:
            chosen = mode.options.variant_of(self.name)
            for variant, run, _ in self.variants:
                if variant == chosen:
                    return run(call, mode)
        return self.run(call, mode)


def _inplace_index(function: Callable) -> int | None:
    """The position of ``function``'s ``inplace`` parameter, if it has one."""
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    return names.index("inplace") if "inplace" in names else None


def _takes_two(function: Callable, more: bool) -> bool:
    """Whether ``function`` takes ``(z, T)`` (and, when ``more``, further positional
    arguments); True when its signature cannot be read."""
    try:
        sig = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature
        return True
    if not more:
        try:
            sig.bind(None, None)
        except TypeError:
            return False
        return True
    kinds = [p.kind for p in sig.parameters.values()]
    return (
        inspect.Parameter.VAR_POSITIONAL in kinds
        or sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds) >= 2
    )


_BUILTIN: set = set()  # the package's rules (``mark_builtin``): their gates are checked at their first use only


def mark_builtin(rules: tuple[Rule, ...]) -> None:
    """Declare ``rules`` the package's own (``core.table`` does, for ``BUILTIN``)."""
    _BUILTIN.update(rules)


def check_gate(rule: GateRule, g: Any, z: Tensor) -> None:
    """The gate of ``rule`` at ``z``: a floating tensor of ``z``'s shape and dtype with finite entries."""
    name = f"GateRule({rule.family!r}).gate"
    if not isinstance(g, Tensor):
        raise TypeError(
            f"{name} returned {type(g).__name__}, not a tensor: return the local derivative at every "
            f"entry of z, a tensor of z's shape {tuple(z.shape)}"
        )
    if g.dtype == torch.bool or not g.is_floating_point():
        raise TypeError(
            f"{name} returned a {g.dtype} tensor: a gate is a floating derivative (a bool mask would "
            f"give the vanilla gradient); return e.g. torch.sigmoid(z / T), of z's dtype {z.dtype}"
        )
    if g.shape != z.shape:
        raise ValueError(
            f"{name} returned shape {tuple(g.shape)} for z of shape {tuple(z.shape)}: a gate is "
            "elementwise, one derivative per entry of z (a scalar or per-channel gate is not)"
        )
    if g.dtype != z.dtype:
        raise TypeError(f"{name} returned {g.dtype} for z of {z.dtype}: return the gate in z's dtype")
    if not torch.isfinite(g).all():
        raise ValueError(
            f"{name} returned NaN or infinite values at {int((~torch.isfinite(g)).sum())} of "
            f"{g.numel()} entries of z (z from {float(z.min()):.3g} to {float(z.max()):.3g}, "
            "T as in effect): keep the gate finite for every input"
        )


@dataclass(frozen=True, eq=False)
class GateRule(Rule):
    """An elementwise operator ``y = f(z)`` whose backward becomes ``grad * gate(z, T)``.

    family             the family's name (coverage report, ``temperatures={family: T}``)
    functions          the torch functions computing ``f`` (``F.elu``, ``torch.nn.functional.silu``, ...)
    gate               ``gate(z, T, *params) -> Tensor``: the soft local derivative at the forward input
                       ``z``, a floating tensor of ``z``'s shape and dtype (checked at its first use)
    temperature        the default ``T`` (None: the built-in family's; a new family needs one)
    inplace_functions  forms that always overwrite their input (``torch.relu_``); ``inplace=True``
                       keywords of ``functions`` are recognised by themselves
    doc                one line for the docs table
    params             ``params(call, options) -> tuple``: call arguments (a slope, bounds) and options
                       handed to ``gate`` after ``T`` (default: none)
    times              ``times(grad, z, T, fresh, *params) -> grad * gate(z, T, *params)``, a faster form
                       that may overwrite ``z`` when ``fresh`` (default: ``grad * gate(...)``)
    nodes              backward-node names of the hard operator (``("EluBackward0",)``): met in a graph,
                       the call ran where the mode could not see it
    override           a rule in a built-in family may change that family's default temperature only
                       with ``override=True``

    The forward value is the intercepted call's own, bit for bit.
    """

    family: str
    functions: tuple[Callable, ...]
    gate: Callable[..., Tensor]
    temperature: float | None = None
    inplace_functions: tuple[Callable, ...] = ()
    doc: str = ""
    params: Callable[[Call, Any], tuple] | None = None
    times: Callable[..., Tensor] | None = None
    nodes: tuple[str, ...] = ()
    override: bool = False
    autograd: tuple[type, ...] = ()
    if TYPE_CHECKING:  # set per instance in __post_init__ (not fields)
        _checked: ClassVar[bool]
        _elementwise: ClassVar[bool]
        _inplace_at: ClassVar[dict[Callable, int | None]]

    def __post_init__(self) -> None:
        if not callable(self.gate) or isinstance(self.gate, type) or not _takes_two(self.gate, self.params is not None):
            raise TypeError(
                f"GateRule({self.family!r}).gate must be a function gate(z, T) of the forward input "
                f"and the temperature, got {self.gate!r}"
            )
        _check_rule(self)
        if self.autograd:
            raise TypeError(
                f"GateRule({self.family!r}) uses the package's own autograd Function; autograd= is "
                "for a SoftenedRule whose run uses Functions of its own"
            )
        if self.temperature is None and self.family not in KEYWORDS:  # the built-in ones all name one
            if self.family not in {r.family for r in _BUILTIN}:
                raise ValueError(
                    f"GateRule({self.family!r}) has no temperature and {self.family!r} is not a "
                    "built-in family: pass temperature=... (its default T, e.g. 1.0)"
                )
        object.__setattr__(self, "_inplace_at", {f: _inplace_index(f) for f in self.functions})
        object.__setattr__(self, "_checked", False)
        object.__setattr__(self, "_elementwise", False)

    def apply(self, call: Call, mode: Context) -> Tensor:
        z = call.input
        if not self._elementwise and self not in _BUILTIN:
            check_elementwise(self, call)
            object.__setattr__(self, "_elementwise", True)
        params = () if self.params is None else tuple(self.params(call, mode.options))
        inplace = call.writes_input(self._inplace_at.get(call.func))
        return SoftGate.apply(z, self, call, mode.temperature_of(self.family), params, inplace, mode.replay(z))

    def backward(self, grad: Tensor, z: Tensor, t: float, fresh: bool, params: tuple) -> Tensor:
        """``grad * gate(z, T, *params)`` (through ``times`` when the rule has one)."""
        if not self._checked:  # a built-in gate is checked at its first use, a user's at every use
            g = self.gate(z, t, *params)
            check_gate(self, g, z)
            object.__setattr__(self, "_checked", self in _BUILTIN)
            if self.times is None:
                return grad * g
        if self.times is not None:
            return self.times(grad, z, t, fresh, *params)
        return grad * self.gate(z, t, *params)


def check_elementwise(rule: GateRule, call: Call) -> None:
    """Refuse a rule whose function is not elementwise: changing one entry of its input (the
    first, then the last) must change no other entry of its output."""
    z = call.input
    if not isinstance(z, Tensor) or z.numel() < 2:
        return
    rest, kwargs = call.args[1:], {k: v for k, v in call.kwargs.items() if k not in ("input", "self", "inplace")}
    with torch.no_grad(), torch._C.DisableTorchFunction():
        base = call.func(z.detach().clone(), *rest, **kwargs)
        for i in (0, z.numel() - 1):
            moved = z.detach().clone()
            flat = moved.view(-1)
            flat[i] = flat[i] + 1.0 + flat[i].abs()
            out = call.func(moved, *rest, **kwargs)
            if not isinstance(out, Tensor) or out.shape != z.shape:
                changed = True
            else:
                differs = (out != base) & ~(out.isnan() & base.isnan())
                differs.view(-1)[i] = False
                changed = bool(differs.any())
            if changed:
                name = getattr(call.func, "__name__", repr(call.func))
                raise TypeError(
                    f"GateRule({rule.family!r}) was applied to {name}, which is not elementwise (changing one entry "
                    "of its input changed other entries of its output, or its shape differs): a GateRule's backward "
                    "is grad * gate(z, T) entry by entry; for an operator that mixes entries (softmax, normalize) "
                    "write a SoftenedRule (docs/extending.md)"
                )


class SoftGate(torch.autograd.Function):
    """The one autograd function of every :class:`GateRule`: forward the intercepted call
    itself; backward ``grad * gate(z, T)``, with ``z`` kept (a copy if the call overwrites
    it, or its replay), in-place outputs marked dirty, subnormals flushed once."""

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, rule: GateRule, call: Call, temperature: float, params: tuple, inplace: bool, replay: Any
    ) -> Tensor:
        ctx.rule, ctx.temperature, ctx.params = rule, temperature, params
        keep_input(ctx, z, inplace, replay)
        out = call.func(*call.args, **call.kwargs)
        if inplace:
            ctx.mark_dirty(z)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, fresh = saved_input(ctx)
        g = ctx.rule.backward(grad, z, ctx.temperature, fresh, ctx.params)
        return flush_subnormals_(g), None, None, None, None, None, None


# ----------------------------------------------------------------------------- softened forwards


def soften(mode: Context, ordinary: Callable, softened: Callable, *tensors: Tensor | None) -> Any:
    """``Softened.apply``, told which tensors' gradients can be wanted (``mode.wanted``):
    leaves other than the pullback's inputs (the parameters) get none, which spares their
    weight-gradient work."""
    return Softened.apply(ordinary, softened, mode.wanted(tensors), *tensors)


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
    def forward(ctx: Any, ordinary: Callable, softened: Callable, keep: tuple, *tensors: Tensor | None) -> Any:
        ctx.softened, ctx.keep = softened, keep
        ctx.save_for_backward(*tensors)
        out = ordinary(*tensors)
        if isinstance(out, tuple):
            ctx.mark_non_differentiable(*[o for o in out if isinstance(o, Tensor) and not o.is_floating_point()])
        return out

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        need = [bool(n) and k for n, k in zip(ctx.needs_input_grad[3:], ctx.keep)]
        with torch.enable_grad(), torch._C.DisableTorchFunction():
            inputs = [
                t.detach().requires_grad_(n) if isinstance(t, Tensor) and n else t
                for t, n in zip(ctx.saved_tensors, need)
            ]
            out = ctx.softened(*inputs)
            outs = out if isinstance(out, tuple) else (out,)
            pairs = [(o, g) for o, g in zip(outs, grads) if isinstance(o, Tensor) and o.requires_grad and g is not None]
            wrt = [t for t, n in zip(inputs, need) if n]
            found = iter(
                torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
                if pairs and wrt
                else [None] * len(wrt)
            )
        return (None, None, None, *[flush_subnormals_(next(found)) if n else None for n in need])
