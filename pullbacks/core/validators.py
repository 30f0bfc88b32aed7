"""The validators of every option, in one place: each names the problem and what to pass.

The options objects (``options.py``), the rules and the command line's argument types
call these; nothing else validates an option.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from .errors import bad_option


def plain_number(value: Any) -> Any:
    """numpy scalars and 0-d tensors as Python numbers (they are what people have)."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.dim() == 0):
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
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise bad_option(name, value, "an integer >= 1")
    if value > MAX_COUNT:
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
        t = positive_number(value, name)
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
