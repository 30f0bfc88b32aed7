"""Every option of the method, declared once: its default, its validator, its meaning.

:class:`GateOptions` configures the soft gates (``soft_gates``, ``excitation_pullback``);
:class:`AscentOptions` adds the projected gradient ascent (``gradient_ascent`` and all
that is built on it: grids, sweeps, one-image explanations, the explorer, the evaluation).
Both are frozen and validated when built, so a bad value fails before any computation::

    opts = AscentOptions(temperature=1.0, steps=10)
    opts.replace(alpha=5.0)                       # a validated copy

The validators below are the only ones in the package; the command line's argument
types call them too.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Tuple, TypeVar

import numpy as np
import torch

GATES = ("sigmoid", "normal_cdf")  # s in relu'(z) -> s(z / T)
POOLS = ("soft", "detached")  # the soft max pool's backward (see docs/method.md)
METHODS = ("pullback", "gradient")  # ascend along the excitation pullback, or the vanilla gradient

# The temperatures of the families beyond ReLU (docs/method.md, "Beyond ReLU"): SiLU and GELU
# as the authors chose them, Hardswish and Mish at 1 (the activation's own gate), attention
# as the authors evaluated PVT with. ``temperatures={...}`` overrides any of them.
FAMILY_TEMPERATURES = {"silu": 1.6, "gelu": 1.0, "hardswish": 1.0, "mish": 1.0, "attention": 1.5}


# --------------------------------------------------------------------------- validators


def _real(value: Any) -> Any:
    """numpy scalars and 0-d tensors as Python numbers (they are what people have)."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.dim() == 0):
        return value.item()
    return value


def positive_number(value: Any, name: str, *, allow_none: bool = False) -> Optional[float]:
    """``value`` as a float if it is a finite number > 0 (``None`` passes where allowed).
    numpy scalars and 0-d tensors are accepted."""
    if value is None and allow_none:
        return None
    value = _real(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def positive_integer(value: Any, name: str) -> int:
    """``value`` as an int if it is an integer >= 1 (numpy integers too)."""
    value = _real(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def choice(value: Any, name: str, choices: Tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


MIN_TEMPERATURE = 1e-6  # below it the soft gates equal the hard ones to float precision


def temperature(value: Any, name: str = "temperature") -> float:
    """A gate temperature: a finite number >= ``MIN_TEMPERATURE``."""
    try:
        t = positive_number(value, name)
    except ValueError:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; small values (e.g. 0.01) "
                         "approach the vanilla gradient, the paper uses 0.3") from None
    if t < MIN_TEMPERATURE:
        raise ValueError(f"{name} must be at least {MIN_TEMPERATURE:g}, got {t!r}: below that the soft gates "
                         "are the hard ones to float precision (and the soft max pool underflows); for the "
                         "vanilla gradient use method='gradient'")
    return t


class Temperatures(dict):
    """A read-only, hashable mapping family -> temperature (a dict, so it serialises as one)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _read_only(self, *args, **kwargs):
        raise TypeError("options are frozen: use options.replace(temperatures={...})")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _read_only  # type: ignore


def family_temperatures(value: Any) -> Mapping[str, float]:
    """The full per-family temperature mapping: ``FAMILY_TEMPERATURES`` with ``value``
    (a partial mapping, or None) applied; an unknown family is a ValueError listing the known."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(f"temperatures must be a mapping such as {{'gelu': 1.0}}, got {value!r}")
    unknown = sorted(set(value) - set(FAMILY_TEMPERATURES), key=str)
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))} in "
                         f"temperatures; known: {', '.join(FAMILY_TEMPERATURES)} (the ReLU family and max "
                         "pooling have their own options: temperature, pool_temperature)")
    merged = {**FAMILY_TEMPERATURES, **{k: temperature(v, f"temperatures[{k!r}]") for k, v in value.items()}}
    return Temperatures(merged)


def clip_range(clip: Any) -> Optional[Tuple[float, float]]:
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


# --------------------------------------------------------------------------- options

O = TypeVar("O", bound="GateOptions")


@dataclass(frozen=True)
class GateOptions:
    """How the backward pass is softened.

    temperature       T of the ReLU-family gates: ``relu'(z) = 1[z > 0]`` becomes ``s(z / T)``
    pool_temperature  T of the soft max pool (None: ``temperature``)
    gate              ``s``: "sigmoid" (the paper) or "normal_cdf" (the authors' later variant)
    pool              "soft" (the gradient of the soft max pool, the paper) or "detached"
                      (its softmax weights only, the authors' later variant)
    temperatures      T of the other families, by name: ``silu`` 1.6, ``gelu`` 1.0, ``hardswish`` 1.0,
                      ``mish`` 1.0, ``attention`` 1.5; a partial mapping overrides only what it names
    strict            raise (instead of warning) when nonlinear calls kept their ordinary gradient
    replay            recompute gate inputs that came out of eval-mode batch norms instead of
                      keeping a copy (saves memory; the result is bit for bit the same)
    """

    temperature: float = 0.3
    pool_temperature: Optional[float] = None
    gate: str = "sigmoid"
    pool: str = "soft"
    temperatures: Optional[Mapping[str, float]] = None
    strict: bool = False
    replay: bool = True

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen
        set_("temperature", temperature(self.temperature))
        if self.pool_temperature is not None:
            set_("pool_temperature", temperature(self.pool_temperature, "pool_temperature"))
        choice(self.gate, "gate", GATES)
        choice(self.pool, "pool", POOLS)
        set_("temperatures", family_temperatures(self.temperatures))
        for flag in ("strict", "replay"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, got {getattr(self, flag)!r}")

    @property
    def pool_t(self) -> float:
        """The max-pool temperature in effect."""
        return self.temperature if self.pool_temperature is None else self.pool_temperature

    def temperature_of(self, family: str) -> float:
        """The temperature of a family of the rule table ("relu", "max_pool", "silu", ...)."""
        if family == "relu":
            return self.temperature
        if family == "max_pool":
            return self.pool_t
        return self.temperatures[family]

    @property
    def gates(self) -> "GateOptions":
        """Only the gate options."""
        return GateOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GateOptions)})

    def replace(self: O, **changes) -> O:
        """A validated copy with ``changes`` (unknown names are a TypeError listing the valid ones)."""
        return build(type(self), self, changes)


@dataclass(frozen=True)
class AscentOptions(GateOptions):
    """The projected, L2-normalised gradient ascent (docs/method.md, "The ascent"), plus the
    gate options it uses when ``method="pullback"``.

    steps    iterations (the paper: 5; also 1 and 10)
    alpha    L2 length of each step, in the [-1, 1] input space
    eps      L2 radius of the projection around the start (None: no projection)
    clip     value range every step is clamped to (None: no clamping)
    method   "pullback" (excitation pullback) or "gradient" (vanilla gradient)
    """

    steps: int = 5
    alpha: float = 20.0
    eps: Optional[float] = 100.0
    clip: Optional[Tuple[float, float]] = (-1.0, 1.0)
    method: str = "pullback"

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_integer(self.steps, "steps")
        object.__setattr__(self, "alpha", positive_number(self.alpha, "alpha"))
        object.__setattr__(self, "eps", positive_number(self.eps, "eps", allow_none=True))
        object.__setattr__(self, "clip", clip_range(self.clip))
        choice(self.method, "method", METHODS)


def build(cls: type[O], options: Optional[GateOptions], overrides: dict) -> O:
    """``cls`` from ``options`` (any options object, a number for the temperature, or None
    for the defaults) with the keyword ``overrides`` applied; the one place keywords
    become options."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    if isinstance(_real(options), numbers.Real) and not isinstance(options, bool):
        options, overrides = None, {"temperature": _real(options), **overrides}  # soft_gates(0.3)
    if options is not None and not isinstance(options, GateOptions):
        raise TypeError(f"options must be a GateOptions or AscentOptions (or a temperature), "
                        f"got {type(options).__name__}")
    base = {} if options is None else {f.name: getattr(options, f.name)
                                       for f in dataclasses.fields(options) if f.name in names}
    if isinstance(base.get("temperatures"), Mapping) and isinstance(overrides.get("temperatures"), Mapping):
        overrides = {**overrides, "temperatures": {**base["temperatures"], **overrides["temperatures"]}}
    return cls(**{**base, **overrides})
