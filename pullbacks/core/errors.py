"""Errors as data: what is wrong, which option and value, and the fix in each interface's terms.

A message the package raises names Python keywords (``temperature=0.3``); the command line says
``--temperature 0.3`` and the app names its input. Front ends format an error from its fields
(:meth:`Problem.render`), never by rewriting its text.

    ProblemValueError("the pullback came out NaN", fixes={"python": "raise temperature=",
                                                          "cli": "raise --temperature"})
    bad_option("temperature", -1, "a finite number > 0")   # "temperature must be ..., got -1"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

INTERFACES = ("python", "cli", "app")
_UNSET: Any = object()


def option_name(option: str, interface: str = "python") -> str:
    """How ``interface`` names an option: ``temperature`` / ``--temperature`` / ``temperature``;
    ``temperatures['gelu']`` / ``--temperatures gelu=T``; ``Settings.ig_steps`` / ``--ig-steps``."""
    if interface != "cli":
        return option
    field = option.split(".")[-1]
    family = re.fullmatch(r"(\w+)\['(\w+)'\]", field)
    if family:
        return f"--{family.group(1).replace('_', '-')} {family.group(2)}=T"
    return "--" + field.replace("_", "-")


class Problem:
    """The fields every user-facing error of the package carries: ``problem`` (what is wrong),
    ``option`` and ``value`` (when one option is wrong), ``fixes`` (interface -> what to do)."""

    problem: str
    option: str | None = None
    value: Any = _UNSET
    fixes: Mapping[str, str] = {}

    def _set(self, problem: str, option: str | None, value: Any, fixes: Mapping[str, str] | None) -> None:
        self.problem, self.option, self.value, self.fixes = problem, option, value, dict(fixes or {})

    def render(self, interface: str = "python", option: bool = True) -> str:
        """The message in ``interface``'s terms (its fix, else Python's); ``option=False``
        leaves out the option's name (a front end that shows it already)."""
        head = self.problem
        if self.option is not None:
            head = (f"{option_name(self.option, interface)} must be " if option else "must be ") + self.problem
            if self.value is not _UNSET:
                head += f", got {self.value!r}"
        fix = self.fixes.get(interface, self.fixes.get("python", ""))
        return f"{head}; {fix}" if fix else head


class ProblemValueError(Problem, ValueError):
    """A wrong value the user can fix (a ValueError carrying :class:`Problem`'s fields)."""

    def __init__(
        self, problem: str, *, option: str | None = None, value: Any = _UNSET, fixes: Mapping[str, str] | None = None
    ) -> None:
        self._set(problem, option, value, fixes)
        super().__init__(self.render())


class ProblemTypeError(Problem, TypeError):
    """A value of the wrong type (a TypeError carrying :class:`Problem`'s fields)."""

    def __init__(
        self, problem: str, *, option: str | None = None, value: Any = _UNSET, fixes: Mapping[str, str] | None = None
    ) -> None:
        self._set(problem, option, value, fixes)
        super().__init__(self.render())


def bad_option(
    option: str, value: Any, expected: str, *, type_error: bool = False, fixes: Mapping[str, str] | None = None
) -> ProblemTypeError | ProblemValueError:
    """``<option> must be <expected>, got <value>``: a :class:`ProblemTypeError` when the value has
    the wrong type (``type_error``), else a :class:`ProblemValueError`."""
    cls = ProblemTypeError if type_error else ProblemValueError
    return cls(expected, option=option, value=value, fixes=fixes)


class MissingExtraError(ImportError):
    """An optional dependency is not installed: the message names the extra to install."""

    def __init__(self, what: str, extra: str, package: str) -> None:
        super().__init__(f'{what} need {package}: pip install -e ".[{extra}]" (or pip install {package})')
