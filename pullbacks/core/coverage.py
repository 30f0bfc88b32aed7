"""Coverage: what a pullback is made of, docs/method.md "Coverage".

``gated`` counts the calls the rules gave a soft backward, per family (the mode counts them as
they happen). ``ordinary`` and ``products`` are read off the autograd graph (:mod:`.graph`):
every backward node on the path from the outputs to the inputs is soft, on the allowlist of
linear nodes (:mod:`.allowlist`), a product of two input-dependent tensors, or ordinary.
Autograd records no node for a mask made by a comparison, so the mode counts those
(``MASKS``) as ordinary too. What is done about a partial pullback is :mod:`.policy`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

_nn = torch._C._nn


def _named(name: str, *functions: Callable | None) -> dict[Callable, str]:
    return {f: name for f in functions if f is not None}


# value-dependent masks made from a tensor on the gradient path (``z * (z > 0)``, ``torch.where(z > 0, ...)``):
# autograd records no node for them, so the mode counts them when they are called
MASKS: dict[Callable, str] = _named(
    "comparison",
    Tensor.__gt__,
    Tensor.__ge__,
    Tensor.__lt__,
    Tensor.__le__,
    torch.gt,
    torch.ge,
    torch.lt,
    torch.le,
    torch.greater,
    torch.greater_equal,
    torch.less,
    torch.less_equal,
    Tensor.gt,
    Tensor.ge,
    Tensor.lt,
    Tensor.le,
    torch.sign,
    Tensor.sign,
    torch.heaviside,
)

_HINTS = {
    "sigmoid": " (squeeze-excitation?)",
    "hardsigmoid": " (squeeze-excitation?)",
    "softmax": " (attention written out by hand? a Hugging Face model: load it with attn_implementation='sdpa'; "
    "timm: keep its fused attention on; a router or a softmax of your own: a rule, docs/extending.md)",
    "erf": " (a GELU written with erf?)",
    "comparison": " (value-dependent: a mask such as z * (z > 0), or torch.where?)",
    "rsqrt": " (a norm written out by hand, such as an RMSNorm?)",
    "var/std": " (a norm written out by hand?)",
    "pow": " (a norm or a GELU written out by hand?)",
    "division by a tensor": " (a norm written out by hand?)",
    "vector norm": " (F.normalize or torch.linalg.vector_norm?)",
    "batch norm in training mode": " (call model.eval() before explaining)",
    "a TorchScript graph": " (explain the Python module, not its torch.jit.script or torch.jit.trace version)",
    "a checkpoint's recompute": " (activation checkpointing: turn it off for explanations)",
    "autograd.Function": " (a rule of yours? declare it: SoftenedRule(..., autograd=(ItsFunction,)))",
}


def hint(name: str) -> str:
    """The hint for an ordinary operator's name ('' when there is none)."""
    return _HINTS.get(name) or next((h for k, h in _HINTS.items() if name.startswith(k)), "")


@dataclass
class Coverage:
    """What one forward pass in ``soft_gates`` left for its backward pass: ``gated`` counts
    the calls given a soft backward per family, ``ordinary`` what kept its ordinary,
    nonlinear gradient by operator, ``products`` the products of two tensors that both
    depend on the input (exact by the product rule), ``unrecognised`` the modules a module
    rule names but did not recognise."""

    gated: Counter = field(default_factory=Counter)
    ordinary: Counter = field(default_factory=Counter)
    recipe: str = ""  # the recipe of the options in effect
    products: Counter = field(default_factory=Counter)
    unrecognised: Counter = field(default_factory=Counter)
    off_path: Counter = field(default_factory=Counter)  # calls a rule covers, made with no input needing a gradient

    @property
    def complete(self) -> bool:
        """True if something was gated and nothing kept an ordinary nonlinear gradient."""
        return bool(self.gated) and not self.ordinary

    @property
    def partial(self) -> bool:
        """True if something kept its ordinary nonlinear gradient."""
        return bool(self.ordinary)

    def merged(self, other: Coverage) -> Coverage:
        """The counts of both (``recipe`` from this one)."""
        return Coverage(
            self.gated + other.gated,
            self.ordinary + other.ordinary,
            self.recipe or other.recipe,
            self.products + other.products,
            self.unrecognised + other.unrecognised,
            self.off_path + other.off_path,
        )

    def describe_ordinary(self) -> str:
        """``16 nodes of sigmoid (squeeze-excitation?), 1 of a TorchScript graph (...)``."""
        return ", ".join(
            f"{n} call{'s' if n != 1 else ''} to {name}{hint(name)}" for name, n in self.ordinary.most_common()
        )

    def summary(self) -> str:
        """What a partial pullback is, in words, with no advice in any interface's terms."""
        return (
            f"{self.describe_ordinary()} kept their ordinary gradient: the pullback is partly a vanilla "
            f"gradient (coverage: {self})"
        )

    def __str__(self) -> str:
        gated = ", ".join(f"{family} {n}" for family, n in self.gated.items()) or "nothing"
        ordinary = ", ".join(f"{name} {n}" for name, n in self.ordinary.most_common()) or "nothing"
        text = f"gated: {gated}; ordinary: {ordinary}"
        if self.products:
            text += "; products: " + ", ".join(f"{name} {n}" for name, n in self.products.most_common())
        if self.unrecognised:
            text += "; not recognised: " + ", ".join(f"{name} {n}" for name, n in self.unrecognised.most_common())
        return text
