"""The method: rules (one module per family of operators), the mode that applies them,
the pullback, the ascent, and the options they share."""

from .ascent import gradient_ascent
from .coverage import Coverage
from .mode import SoftGateMode, soft_gates
from .options import AscentOptions, GateOptions
from .policy import PartialPullbackError, PartialPullbackWarning
from .pullback import SoftGated, excitation_pullback
from .rules.base import GateRule, Rule, SoftenedRule
from .rules.module import ModuleRule

__all__ = [
    "soft_gates",
    "SoftGateMode",
    "excitation_pullback",
    "gradient_ascent",
    "GateOptions",
    "AscentOptions",
    "Coverage",
    "PartialPullbackWarning",
    "PartialPullbackError",
    "GateRule",
    "ModuleRule",
    "Rule",
    "SoftenedRule",
    "SoftGated",
]
