"""The rule table: every torch function the soft gates intercept, and the rule for it.

Everything that lists families or temperatures is read from here: the default
temperatures, the validation of ``temperatures=``, the "nothing gated" message, the
command line's help, the apps' temperature inputs and the table in docs/method.md.

A new built-in family is one module in ``rules/`` and its ``RULES`` added to ``BUILTIN``;
a user's rules are appended with ``rules=[...]`` and win over built-in ones for the
functions they name (docs/extending.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from .rules import activation, attention, module, norm, pool, relu
from .rules.base import KEYWORDS, Rule, mark_builtin

BUILTIN: tuple[Rule, ...] = relu.RULES + pool.RULES + activation.RULES + norm.RULES + attention.RULES + module.RULES
mark_builtin(BUILTIN)
__all__ = [
    "BUILTIN",
    "KEYWORDS",
    "check_user_rules",
    "default_temperatures",
    "families",
    "gated_summary",
    "markdown",
    "rules_in_effect",
    "table",
    "variant_names",
]


def rules_in_effect(user: Iterable[Rule] = ()) -> tuple[Rule, ...]:
    """The built-in rules, then ``user``'s (a later rule wins for a function both name)."""
    return BUILTIN + tuple(user)


@functools.lru_cache(maxsize=64)
def table(user: tuple[Rule, ...] = ()) -> dict[Callable, tuple[Rule, bool]]:
    """torch function -> (its rule, whether that form always overwrites its input)."""
    found: dict[Callable, tuple[Rule, bool]] = {}
    for rule in rules_in_effect(user):
        found.update({f: (rule, False) for f in rule.functions})
        found.update({f: (rule, True) for f in rule.inplace_functions})
    return found


def families(user: Iterable[Rule] = ()) -> dict[str, list[Rule]]:
    """family -> its rules, in table order."""
    out: dict[str, list[Rule]] = {}
    for rule in rules_in_effect(user):
        out.setdefault(rule.family, []).append(rule)
    return out


def check_user_rules(user: Iterable[Rule]) -> None:
    """A user's rule in a built-in family keeps that family's default temperature: a different
    one needs ``override=True`` (a keyword family's temperature is its keyword's alone)."""
    builtin = {family: rules[0].temperature for family, rules in families().items()}
    for rule in user:
        name = f"{type(rule).__name__}({rule.family!r})"
        if rule.family in KEYWORDS and rule.temperature is not None:
            raise ValueError(
                f"{name} sets temperature={rule.temperature:g}, but the {rule.family} family's "
                f"temperature is the option {KEYWORDS[rule.family]}=...: leave the rule's out"
            )
        elif (
            rule.family in builtin
            and rule.temperature is not None
            and rule.temperature != builtin[rule.family]
            and not rule.override
        ):
            raise ValueError(
                f"{name} would change the built-in {rule.family} family's default temperature from "
                f"{builtin[rule.family]:g} to {rule.temperature:g}: pass override=True to mean it, "
                f"leave temperature=None to keep {builtin[rule.family]:g}, or set it per call with "
                f"temperatures={{{rule.family!r}: {rule.temperature:g}}}"
            )


def default_temperatures(user: Iterable[Rule] = ()) -> dict[str, float]:
    """The default temperature of every family set through ``temperatures={...}`` (a user's
    rule with ``override=True`` overrides a built-in family's default: ``check_user_rules``)."""
    out: dict[str, float] = {}
    for rule in rules_in_effect(user):
        if rule.temperature is not None and rule.family not in KEYWORDS:
            out[rule.family] = rule.temperature
    return out


def variant_names(user: Iterable[Rule] = ()) -> dict[str, tuple[str, ...]]:
    """rule name -> its variants, the default ("soft") first, for the rules that have several."""
    found: dict[str, tuple[str, ...]] = {}
    for r in rules_in_effect(user):
        variants = getattr(r, "variants", ())  # the softened rules that have several (sdpa, mha)
        if variants:
            found[getattr(r, "name")] = ("soft", *(v for v, _, _ in variants))  # noqa: B009 - not every Rule has one
    return found


def operator_names(rules: Iterable[Rule]) -> list[str]:
    """The names of the functions (and module classes) ``rules`` intercept, without repeats."""
    names = (
        getattr(f, "__name__", f if isinstance(f, str) else repr(f))
        for r in rules
        for f in (*r.functions, *r.inplace_functions, *getattr(r, "classes", ()))
    )
    return list(dict.fromkeys(n for n in names if not n.endswith("_") or n.endswith("__")))


def gated_summary(user: Iterable[Rule] = ()) -> str:
    """``relu (relu, relu6, ...), max_pool (...), ...``: what the soft gates cover."""
    return "; ".join(f"{family} ({', '.join(operator_names(rules))})" for family, rules in families(user).items())


def markdown() -> str:
    """The docs table of the built-in rules (docs/method.md shows it; a test keeps them equal)."""
    lines = ["| family | operator: backward rule | default temperature |", "|---|---|---|"]
    for family, rules in families().items():
        t = rules[0].temperature
        if family in KEYWORDS:
            default = f"`{KEYWORDS[family]}=`" + (f" ({t:g})" if t is not None else " (default: `temperature`)")
        else:
            default = "none" if t is None else f"{t:g}"
        docs = [r.doc + "".join(f"; variant `{v}`: {d}" for v, _, d in getattr(r, "variants", ())) for r in rules]
        lines.append(f"| `{family}` | {'; '.join(docs)} | {default} |")
    return "\n".join(lines)
