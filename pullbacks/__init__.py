"""Excitation pullbacks: explain deep networks with backward-only soft gates.

    with pullbacks.soft_gates(temperature=0.3): ...       # the mechanism
    pullbacks.excitation_pullback(model, x, target)       # one modified gradient
    pullbacks.gradient_ascent(model, x, target)           # the paper's visualisation
    pullbacks.GateRule("elu", (F.elu,), gate, 1.0)        # a rule of your own (docs/extending.md)
    pullbacks.ModuleRule("norm", (MyNorm,), run)          # a rule for a module class of yours

The method is explained in docs/method.md. The names below load on first use (so that
the command line starts, and stops on Ctrl-C, before torch is imported).
"""

from typing import TYPE_CHECKING

__all__ = [
    "soft_gates",
    "excitation_pullback",
    "gradient_ascent",
    "GateOptions",
    "AscentOptions",
    "GateRule",
    "ModuleRule",
    "SoftGated",
    "Coverage",
    "PartialPullbackWarning",
    "PartialPullbackError",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .core import (  # noqa: F401
        AscentOptions,
        Coverage,
        GateOptions,
        GateRule,
        ModuleRule,
        PartialPullbackError,
        PartialPullbackWarning,
        SoftGated,
        excitation_pullback,
        gradient_ascent,
        soft_gates,
    )


def __getattr__(name: str) -> object:
    if name in __all__:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'pullbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
