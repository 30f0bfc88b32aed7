"""``soft_gates()``: route every call the rule table knows to its soft backward.

A :class:`torch.overrides.TorchFunctionMode` sees each call as it happens, whether it
comes from a module (``nn.ReLU``, reused or not, in place or not), a functional call
(``F.relu``, ``torch.relu``, ``Tensor.relu_``) or a pooling layer. It looks the function
up in the rule table (:func:`~pullbacks.core.table.table`, with the user's ``rules``),
applies the rule and counts the call under the rule's family. What kept its ordinary
gradient is read off the autograd graph of what the block's calls returned (weak
references, walked at the block's exit or when ``mode.coverage`` is read: :mod:`.graph`).
Nothing is attached to the model, so nothing has to be undone.
"""

from __future__ import annotations

import functools
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .calls import Call
from .coverage import MASKS, Coverage
from .graph import Reading, check_no_checkpoint_hooks, walk
from .modules import ModuleHooks, rule_for
from .options import GateOptions, build
from .policy import CoverageCheck
from .randomness import DRAWS, check_draw
from .replay import Recorder, Replay
from .rules.module import ModuleRule
from .table import rules_in_effect, table


@functools.lru_cache(maxsize=64)
def fates(rules: tuple = ()) -> dict:
    """torch function -> (its rule table entry or None, its MASKS name or None, whether it may draw
    random numbers, whether the replay recorder watches it): every function the mode does more than
    pass through, so that a call it passes through costs one lookup."""
    entries = table(rules)
    recorded: set[Callable[..., Any]] = set(Recorder().functions)  # type: ignore[arg-type]  # functions are callables
    funcs: set[Callable[..., Any]] = {*entries, *MASKS, *DRAWS, *recorded}
    return {f: (entries.get(f), MASKS.get(f), f in DRAWS, f in recorded) for f in funcs}


@functools.lru_cache(maxsize=1)
def quiet_fates() -> dict:
    """The fates inside a module a module rule has recognised: random draws still refused, nothing else."""
    return {f: (None, None, True, False) for f in DRAWS}


def module_types(model: torch.nn.Module) -> tuple[type, ...]:
    """The classes of ``model`` and of all its submodules (a cheap fingerprint of its structure)."""
    out: list[type] = []
    stack: list[torch.nn.Module | None] = [model]
    while stack:
        m = stack.pop()
        if m is not None:
            out.append(type(m))
            stack.extend(m._modules.values())
    return tuple(out)


def _needs_grad(args: tuple, kwargs: dict) -> bool:
    """True if a tensor argument requires a gradient (a plain loop: this runs on every gated call)."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.requires_grad:
            return True
    for a in kwargs.values():
        if isinstance(a, torch.Tensor) and a.requires_grad:
            return True
    return False


class _Roots(list):
    """Weak references to the tensors the block's calls returned, and the backward node of the
    last one held (so that a forward pass whose result was not kept is still read)."""

    last = None

    def keep(self, out: object) -> None:
        """Add the tensors of ``out`` that have a backward node."""
        for t in (out,) if isinstance(out, torch.Tensor) else out if isinstance(out, (tuple, list)) else ():
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                self.append(weakref.ref(t))
                self.last = t.grad_fn


class SoftGateMode(TorchFunctionMode):
    """Applies the rule table to every call made while it is active.

    ``counts`` is the coverage as counted by the mode: the calls given a soft backward per
    family (``gated``) and the value-dependent masks (``MASKS``) on the gradient path. Only
    calls on the gradient path count (grad mode on, some tensor argument requires a
    gradient): the others have no backward pass. With ``track=True`` (a bare
    ``soft_gates()`` block) the mode also keeps weak references to what its calls returned,
    and ``coverage`` adds what the graph walk reads off them; the pullback's callers walk
    from the logits themselves (:class:`~.policy.CoverageCheck`).
    """

    def __init__(
        self,
        options: GateOptions,
        *,
        check_on_exit: bool = False,
        refuse_random: bool = False,
        model: torch.nn.Module | None = None,
        track: bool = False,
    ):
        super().__init__()
        self.refuse_random = refuse_random  # a model's forward pass alone runs inside: refuse its random draws
        self.options = options
        self.fates = fates(options.rules)
        self.quiet_fates = quiet_fates()
        self.check_on_exit = check_on_exit  # soft_gates(strict=True): check the coverage when the block exits
        self.counts = Coverage(recipe=options.recipe)
        self.roots: _Roots | None = _Roots() if track else None  # what the calls returned
        self.reading: Reading | None = None
        self._read_at = -1  # len(roots) at the last walk
        self.wrt: tuple | None = None  # the only leaves whose gradient is wanted (None: any)
        self.gradless = 0  # calls a rule covers, made with gradients off (a reentrant checkpoint?)
        self.recorder: Recorder | None = Recorder() if options.replay else None
        self.in_effect = in_effect = rules_in_effect(options.rules)
        self.structure = None if model is None else module_types(model)  # ``model``: the only model run inside
        # module rules need global forward hooks (a cost on every module call): only when some module could match
        self.modules = (
            ModuleHooks(self, in_effect)
            if any(isinstance(r, ModuleRule) for r in in_effect)
            and (model is None or any(rule_for(in_effect, c) is not None for c in set(self.structure or ())))
            else None
        )

    @property
    def coverage(self) -> Coverage:
        """What was gated, what kept its ordinary gradient and which products were met (the
        counts, with the graph walk of what the block's calls returned when it tracks them)."""
        if self.roots is None:
            return self.counts
        if self.reading is None or self._read_at != len(self.roots):
            self.read()
        reading = self.reading or Reading()
        return self.counts.merged(Coverage(ordinary=reading.ordinary, products=reading.products))

    def read(self) -> None:
        """Walk the autograd graph from the tensors the block's calls returned that are still alive."""
        roots = self.roots if self.roots is not None else _Roots()
        alive = [t for t in (r() for r in roots) if t is not None]
        roots[:] = [weakref.ref(t) for t in alive]
        nodes = [t.grad_fn for t in alive] or ([roots.last] if roots.last is not None else [])
        self.reading, self._read_at = walk(nodes, self.in_effect, self.wrt), len(roots)

    @property
    def gated(self) -> Counter:
        """The gated calls per family (``coverage.gated``)."""
        return self.counts.gated

    @property
    def gates_seen(self) -> int:
        """The number of gated calls, all families together."""
        return sum(self.gated.values())

    # ------------------------------------------------------------ what a rule may use (rules.base.Context)

    def temperature_of(self, family: str) -> float:
        """The temperature of ``family`` in effect."""
        return self.options.temperature_of(family)

    def replay(self, z: torch.Tensor) -> Replay | None:
        """A replay of ``z`` for a rule to keep instead of ``z`` (None without one)."""
        return None if self.recorder is None else self.recorder.replay(z)

    def wanted(self, tensors: tuple) -> tuple[bool, ...]:
        """For each of ``tensors``: may its gradient be asked for? Not when it is a leaf other
        than the inputs ``wrt`` names (a parameter, while the pullback wants the input
        gradient alone)."""
        wrt = self.wrt
        return tuple(
            isinstance(t, torch.Tensor) and (wrt is None or not t.is_leaf or any(t is w for w in wrt)) for t in tensors
        )

    # ------------------------------------------------------------ the mode

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        fate = self.fates.get(func)  # one lookup: most calls are neither gated, masks, drawn nor recorded
        if fate is None:
            out = func(*args, **kwargs) if kwargs else func(*args)
            if self.roots is not None:
                self.roots.keep(out)
            return out
        kwargs = kwargs or {}
        entry, name, draw, record = fate
        if draw and self.refuse_random:
            check_draw(func, args, kwargs)  # before the call: a refused draw is never made
        if entry is not None:
            if not torch.is_grad_enabled():
                self.gradless += 1
            elif not _needs_grad(args, kwargs):
                self.counts.off_path[entry[0].family] += 1
            else:
                check_no_checkpoint_hooks()
                rule, inplace = entry
                self.counts.gated[rule.family] += 1
                out = rule.apply(Call(func, args, kwargs, inplace), self)
                if self.roots is not None:
                    self.roots.keep(out)
                return out
        if name is not None and torch.is_grad_enabled() and _needs_grad(args, kwargs):
            self.counts.ordinary[name] += 1
        if record and self.recorder is not None and torch.is_grad_enabled():
            out = self.recorder.functions[func](func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        if self.roots is not None:
            self.roots.keep(out)
        return out

    def __enter__(self) -> SoftGateMode:
        from torch.overrides import _get_current_function_mode_stack

        if any(isinstance(m, SoftGateMode) for m in _get_current_function_mode_stack()):
            raise RuntimeError(
                "soft_gates blocks cannot be nested: the inner block would take every call and the outer "
                "one would see none; use one block with the options you want"
            )
        out = super().__enter__()
        if self.modules is not None:
            self.modules.__enter__()
        return out

    def __exit__(self, *exc: Any) -> None:
        if self.modules is not None:
            self.modules.__exit__(*exc)
        if self.recorder is not None:
            self.recorder.clear()  # hold no tensor past the block
        out = super().__exit__(*exc)
        if self.roots is not None and exc[0] is None:
            self.read()  # while what the block returned is alive
        if self.roots is not None:
            self.roots, self._read_at = _Roots(), 0 if self.reading is not None else -1
        if self.check_on_exit and self.options.strict and exc[0] is None:
            CoverageCheck(strict=self.options.strict, rules=self.options.rules).partial(self.coverage)
        return out


@contextmanager
def soft_gates(options: GateOptions | None = None, **overrides: Any) -> Iterator[SoftGateMode]:
    """Give every call the rule table covers, made inside the block, its soft backward:
    ``relu'(z) = 1[z > 0]`` becomes ``s(z / T)``, max pooling back-propagates through a soft
    max pool of temperature ``pool_temperature`` (default: ``temperature``), and SiLU/GELU/
    Hardswish/Mish, norms and attention through their rules (docs/method.md).

    Options: a :class:`GateOptions` and/or its fields as keywords (``temperature=0.3``,
    ``pool_temperature``, ``gate``, ``pool``, ``temperatures={"gelu": 1.0}``,
    ``rules=[GateRule(...)]``, ``strict``, ``replay``). The forward pass is unchanged bit for
    bit. The gate is fixed when the forward call happens, so ``backward()`` may run after
    the block. Yields the mode: ``mode.coverage`` says what was gated, what kept its ordinary
    gradient and which products were met, read off the autograd graph of what the block's
    calls returned (at the exit, or when it is read inside). With ``strict=True`` the block
    raises :class:`PartialPullbackError` when it exits if something kept its ordinary
    gradient (``strict="products"``: products too). Blocks cannot be nested (a RuntimeError
    says so).

    >>> with pullbacks.soft_gates(temperature=0.3):
    ...     logit = model(x.requires_grad_())[0, 282]
    >>> logit.backward()            # x.grad is the excitation pullback
    """
    mode = SoftGateMode(build(GateOptions, options, overrides), check_on_exit=True, track=True)
    with mode:
        yield mode
