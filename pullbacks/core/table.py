"""The rule table: every torch function the soft gates intercept, and the rule for it.

A new family of operators is one new module in ``rules/`` and one entry in ``RULES``.
"""

from __future__ import annotations

from typing import Callable

from .rules import activation, attention, norm, pool, relu
from .rules.base import Rule

RULES: tuple[Rule, ...] = relu.RULES + pool.RULES + activation.RULES + norm.RULES + attention.RULES
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(r.family for r in RULES))

# torch function -> (rule, whether that form always overwrites its input)
TABLE: dict[Callable, tuple[Rule, bool]] = {}
for _rule in RULES:
    TABLE.update({f: (_rule, False) for f in _rule.functions})
    TABLE.update({f: (_rule, True) for f in _rule.inplace_functions})
