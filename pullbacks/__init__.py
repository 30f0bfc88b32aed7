"""Excitation pullbacks: explain ReLU networks with backward-only soft gates.

    with pullbacks.soft_gates(temperature=0.3): ...       # the mechanism
    pullbacks.excitation_pullback(model, x, target)       # one modified gradient
    pullbacks.gradient_ascent(model, x, target)           # the paper's visualisation
"""

from .ascent import gradient_ascent
from .mode import soft_gates
from .pullback import excitation_pullback

__all__ = ["soft_gates", "excitation_pullback", "gradient_ascent"]
__version__ = "0.1.0"
