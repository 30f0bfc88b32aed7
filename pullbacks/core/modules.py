"""Module rules in a soft-gate block: two global forward hooks, registered when the block is
entered and removed when it exits (nothing is attached to the user's model).

Before a module whose class a :class:`~.rules.module.ModuleRule` names runs, the mode's
coverage is set aside and a fresh one counts the module's inner calls; after it ran, the
rule is applied (``ModuleRule.apply``). Recognised: the output gets the rule's backward,
the family is counted once and the inner counts are dropped (the rule covers them). Not
recognised: the inner counts join the block's, and ``coverage.unrecognised`` names the class.
A module is checked at its first call in a block (every call, until it is recognised); inside a
module recognised before, the mode gates and counts nothing (only random draws are still refused),
since the module's own graph is dropped.
Global hooks see every thread's modules; only the thread that entered the block is served (a
torch-function mode is per thread, and so is what these hooks do).
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module

from .coverage import Coverage
from .rules.base import Rule
from .rules.module import ModuleRule


@functools.lru_cache(maxsize=256)
def rule_for(rules: tuple[Rule, ...], cls: type) -> ModuleRule | None:
    """The module rule among ``rules`` that names ``cls`` (a later rule wins), or None."""
    for rule in reversed(rules):
        if isinstance(rule, ModuleRule) and rule.matches(cls):
            return rule
    return None


def _the_input(args: tuple, kwargs: dict) -> Any:
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and len(kwargs) == 1:
        return next(iter(kwargs.values()))
    return None


class ModuleHooks:
    """The module rules of one mode (``mode.coverage`` is what they count into)."""

    def __init__(self, mode: Any, rules: tuple[Rule, ...]) -> None:
        self.mode, self.rules = mode, rules
        self.frames: list[tuple[nn.Module, ModuleRule, Coverage, dict]] = []  # module, rule, set aside: coverage, fates
        self.handles: list = []
        self.thread: int | None = None
        self.recognised: set = set()  # (id, class) of the modules recognised in this block (checked once)

    def __enter__(self) -> ModuleHooks:
        self.thread = threading.get_ident()
        self.handles = [
            _module.register_module_forward_pre_hook(self.before),
            # a forward hook may return a replacement output (the rule's); torch's stub says None
            _module.register_module_forward_hook(self.after, with_kwargs=True),  # type: ignore[arg-type]
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        while self.frames:  # a forward pass that raised inside a named module
            self._close(Coverage())

    def before(self, module: nn.Module, args: tuple) -> None:
        if threading.get_ident() != self.thread:  # another thread's module: not this block's
            return
        rule = rule_for(self.rules, type(module))  # type: ignore[arg-type]  # classes hash by identity
        if rule is not None:
            self.frames.append((module, rule, self.mode.counts, self.mode.fates))
            self.mode.counts = Coverage(recipe=self.mode.counts.recipe)
            if (id(module), type(module)) in self.recognised:  # its output's own graph is dropped: gate nothing
                self.mode.fates = self.mode.quiet_fates

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Tensor | None:
        if threading.get_ident() != self.thread or not self.frames or not any(f[0] is module for f in self.frames):
            return None
        while self.frames[-1][0] is not module:  # frames left by a forward that raised and was caught
            self._close(Coverage())
        _, rule, outer, fates = self.frames[-1]
        x = _the_input(args, kwargs)
        if not (
            torch.is_grad_enabled()
            and isinstance(x, Tensor)
            and x.requires_grad
            and isinstance(output, Tensor)
            and output.is_floating_point()
        ):
            self._close(Coverage())
            return None
        options = self.mode.options  # a family without a temperature (the norms) runs at T = 1
        t = options.temperature_of(rule.family) if rule.family in ("relu", "max_pool", *options.temperatures) else 1.0
        result, why = rule.apply(module, x, output, t, check=(id(module), type(module)) not in self.recognised)
        if result is None:
            self._close(
                Coverage(unrecognised=Counter({f"{type(module).__name__} ({rule.family} module rule: {why})": 1}))
            )
            return None
        self.recognised.add((id(module), type(module)))
        self.frames.pop()
        self.mode.counts, self.mode.fates = outer, fates
        outer.gated[rule.family] += 1
        if self.mode.roots is not None:
            self.mode.roots.keep(result)
        return result

    def _close(self, extra: Coverage) -> None:
        """End the innermost frame: its inner counts (and ``extra``) join the coverage set aside."""
        _, _, outer, fates = self.frames.pop()
        inner, self.mode.counts, self.mode.fates = self.mode.counts, outer, fates
        for counter in ("gated", "ordinary", "products", "unrecognised"):
            getattr(outer, counter).update(getattr(inner, counter))
            getattr(outer, counter).update(getattr(extra, counter))
