"""The validators of every option, in one place: each names the problem and what to pass.

The options objects (``options.py``), the rules and the command line's argument types
call these; nothing else validates an option. Importing this module does not import torch
(the command line answers an argument error before torch loads).
"""

from __future__ import annotations

import difflib
import math
import numbers
import sys
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import bad_option


def plain_number(value: Any) -> Any:
    """numpy scalars and 0-d tensors as Python numbers (they are what people have)."""
    if isinstance(value, np.generic):
        return value.item()
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if torch is not None and isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    return value


def positive_number(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a finite number > 0 (``None`` passes where allowed).
    numpy scalars and 0-d tensors are accepted."""
    if value is None and allow_none:
        return None
    value = plain_number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_option(name, value, "a number > 0", type_error=True)
    if not math.isfinite(value) or value <= 0:
        raise bad_option(name, value, "a finite number > 0")
    return float(value)


MAX_COUNT = 10**9  # steps, samples, batch sizes: far beyond any run, and within every C integer


def positive_integer(value: Any, name: str) -> int:
    """``value`` as an int if it is an integer from 1 to ``MAX_COUNT`` (numpy integers too)."""
    value = plain_number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise bad_option(name, value, "an integer >= 1")
    if int(value) > MAX_COUNT:
        raise bad_option(name, value, f"at most {MAX_COUNT:,}")
    return int(value)


def choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise bad_option(name, value, f"one of {', '.join(map(repr, choices))}")
    return value


MIN_TEMPERATURE = 1e-6  # below it the soft gates equal the hard ones to float precision


def temperature(value: Any, name: str = "temperature") -> float:
    """A gate temperature: a finite number >= ``MIN_TEMPERATURE``."""
    try:
        t = float(positive_number(value, name))  # type: ignore[arg-type]  # never None without allow_none
    except ValueError:
        raise bad_option(
            name,
            value,
            "a finite number > 0",
            fixes={"python": "small values (e.g. 0.01) approach the vanilla gradient, the paper uses 0.3"},
        ) from None
    if t < MIN_TEMPERATURE:
        below = (
            "below that the soft gates are the hard ones to float precision (and the soft max pool "
            "underflows); for the vanilla gradient use "
        )
        raise bad_option(
            name,
            t,
            f"at least {MIN_TEMPERATURE:g}",
            fixes={
                "python": below + "method='gradient'",
                "cli": below + "--method gradient",
                "app": below + "the vanilla gradient's column",
            },
        )
    return t


def clip_range(clip: Any) -> tuple[float, float] | None:
    """``None`` or a pair ``(low, high)`` with ``low < high``."""
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise TypeError(f"clip must be None or a pair (low, high), got {clip!r}") from None
    if not lo < hi:
        raise ValueError(f"clip must satisfy low < high, got {clip!r}")
    return lo, hi


# the kinds of option whose text form needs nothing but the validators above (options.FIELDS)
PLAIN_KINDS = ("temperature", "integer", "number", "optional_number", "choice", "flag", "clip")


def plain_from_text(name: str, kind: str, text: str, choices: tuple[str, ...] = ()) -> Any:
    """The value of option ``name`` of a plain ``kind`` (``PLAIN_KINDS``) written as text:
    numbers as ``0.3``, ``none`` for an optional number or no clip, clip as ``-1,1``, flags as
    ``true``/``false``; validated like the keyword, errors name the option."""
    t = str(text).strip()
    if kind in ("optional_number", "clip") and t.lower() == "none":
        return None
    if kind in ("temperature", "number", "optional_number", "integer"):
        try:
            value = int(t) if kind == "integer" else float(t)
        except ValueError:
            raise bad_option(name, text, "an integer" if kind == "integer" else "a number", type_error=True) from None
        checks: dict[str, Callable[[Any, str], Any]] = {"temperature": temperature, "integer": positive_integer}
        check = checks.get(kind, positive_number)
        return check(value, name)
    if kind == "choice":
        return choice(t, name, choices)
    if kind == "flag":
        if t.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise bad_option(name, text, "true or false")
        return t.lower() in ("true", "1", "yes", "on")
    if kind == "clip":
        try:
            return clip_range(t.split(","))
        except (TypeError, ValueError):
            raise bad_option(name, text, "LOW,HIGH with LOW < HIGH, or none") from None
    raise ValueError(f"{kind!r} is not a plain kind of option ({', '.join(PLAIN_KINDS)})")


def unknown_name(what: str, name: str, allowed: Iterable[str]) -> str:
    """The message for a name that is not in ``allowed``, with the closest ones."""
    close = difflib.get_close_matches(str(name), list(allowed), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; choose from {', '.join(allowed)}"
