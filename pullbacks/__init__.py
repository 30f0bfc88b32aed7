"""Excitation pullbacks: explain deep networks with backward-only soft gates.

    with pullbacks.soft_gates(temperature=0.3): ...       # the mechanism
    pullbacks.excitation_pullback(model, x, target)       # one modified gradient
    pullbacks.gradient_ascent(model, x, target)           # the paper's visualisation
    pullbacks.GateRule("elu", (F.elu,), gate, 1.0)        # a rule of your own (docs/extending.md)

The method is explained in docs/method.md.
"""

from .core import (AscentOptions, Coverage, GateOptions, GateRule, PartialPullbackError, PartialPullbackWarning,
                   SoftGated, excitation_pullback, gradient_ascent, soft_gates)

__all__ = ["soft_gates", "excitation_pullback", "gradient_ascent", "GateOptions", "AscentOptions", "GateRule", "SoftGated",
           "Coverage", "PartialPullbackWarning", "PartialPullbackError"]
__version__ = "0.1.0"
