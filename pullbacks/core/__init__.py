"""The method: rules (one module per family of operators), the mode that applies them,
the pullback, the ascent, and the options they share.

The names below load on first use, so that a torch-free module of this package (the
validators, the errors) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "soft_gates": "mode",
    "SoftGateMode": "mode",
    "excitation_pullback": "pullback",
    "gradient_ascent": "ascent",
    "GateOptions": "options",
    "AscentOptions": "options",
    "Coverage": "coverage",
    "PartialPullbackWarning": "policy",
    "PartialPullbackError": "policy",
    "GateRule": "rules.base",
    "ModuleRule": "rules.module",
    "Rule": "rules.base",
    "SoftenedRule": "rules.base",
    "SoftGated": "pullback",
}
__all__ = list(_WHERE)

if TYPE_CHECKING:  # the same names, for type checkers and editors (redundant aliases: re-exports)
    from .ascent import gradient_ascent as gradient_ascent
    from .coverage import Coverage as Coverage
    from .mode import SoftGateMode as SoftGateMode
    from .mode import soft_gates as soft_gates
    from .options import AscentOptions as AscentOptions
    from .options import GateOptions as GateOptions
    from .policy import PartialPullbackError as PartialPullbackError
    from .policy import PartialPullbackWarning as PartialPullbackWarning
    from .pullback import SoftGated as SoftGated
    from .pullback import excitation_pullback as excitation_pullback
    from .rules.base import GateRule as GateRule
    from .rules.base import Rule as Rule
    from .rules.base import SoftenedRule as SoftenedRule
    from .rules.module import ModuleRule as ModuleRule


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'pullbacks.core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
