"""Coverage, the counting: which calls of a forward pass got a soft backward (per family) and
which nonlinear calls kept their ordinary gradient (per operator), docs/method.md "Coverage".

What is gated is whatever the rules in effect name (``core.table``); ``ORDINARY`` lists the
nonlinear torch functions no built-in rule names (a test keeps the two apart), and a user's
rule for one of them wins, since the mode looks a call up in the rule table first. What is
done about a partial pullback is :mod:`.policy`; what the mode cannot see is found by the
graph walk of :mod:`.graph`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_nn = torch._C._nn


def _named(name: str, *functions) -> dict[Callable, str]:
    return {f: name for f in functions if f is not None}


# nonlinear functions that no rule covers, by the name the report gives them
ORDINARY: dict[Callable, str] = {
    **_named("softmax", F.softmax, torch.softmax, Tensor.softmax, torch._softmax),
    **_named("log_softmax", F.log_softmax, torch.log_softmax, Tensor.log_softmax),
    **_named("sigmoid", torch.sigmoid, Tensor.sigmoid, Tensor.sigmoid_, torch.sigmoid_, F.sigmoid),
    **_named("hardsigmoid", F.hardsigmoid, _nn.hardsigmoid, _nn.hardsigmoid_),
    **_named("tanh", torch.tanh, Tensor.tanh, Tensor.tanh_, torch.tanh_, F.tanh),
    **_named("elu", F.elu, _nn.elu, _nn.elu_),
    **_named("selu", F.selu, torch.selu, torch.selu_),
    **_named("celu", F.celu, torch.celu, torch.celu_),
    **_named("softplus", F.softplus),
    **_named("prelu", F.prelu, torch.prelu),
    **_named("rrelu", F.rrelu, torch.rrelu, torch.rrelu_),
    **_named("threshold", F.threshold, torch.threshold, torch.threshold_),
    **_named("clamp", torch.clamp, torch.clip, Tensor.clamp, Tensor.clip, Tensor.clamp_, Tensor.clip_,
             torch.clamp_, torch.clamp_min, torch.clamp_max, Tensor.clamp_min, Tensor.clamp_max),
    **_named("maximum", torch.maximum, torch.minimum, Tensor.maximum, Tensor.minimum),
    **_named("erf", torch.erf, Tensor.erf, torch.special.erf),
    **_named("glu", F.glu),
    **_named("logsigmoid", F.logsigmoid),
    **_named("softsign", F.softsign),
    **_named("max_pool1d", F.max_pool1d, torch.max_pool1d, F.max_pool1d_with_indices),
    **_named("max_pool3d", F.max_pool3d, torch.max_pool3d, F.max_pool3d_with_indices),
    **_named("comparison", Tensor.__gt__, Tensor.__ge__, Tensor.__lt__, Tensor.__le__, torch.gt, torch.ge, torch.lt,
             torch.le, torch.greater, torch.greater_equal, torch.less, torch.less_equal, Tensor.gt, Tensor.ge,
             Tensor.lt, Tensor.le, torch.sign, Tensor.sign, torch.heaviside),
    **_named("adaptive_max_pool", F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
             F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
             F.adaptive_max_pool3d_with_indices),
    # what a norm or a GELU is made of when written out by hand (an RMSNorm's x * rsqrt(mean(x²) + eps),
    # GPT-2's tanh GELU): each nonlinear, so a pullback through them is partly a vanilla gradient
    **_named("rsqrt", torch.rsqrt, Tensor.rsqrt, torch.rsqrt_, Tensor.rsqrt_),
    **_named("sqrt", torch.sqrt, Tensor.sqrt, torch.sqrt_, Tensor.sqrt_),
    **_named("exp", torch.exp, Tensor.exp, torch.exp_, Tensor.exp_, torch.special.exp2, torch.exp2),
    **_named("reciprocal", torch.reciprocal, Tensor.reciprocal, torch.reciprocal_, Tensor.reciprocal_),
    **_named("var/std", torch.var, Tensor.var, torch.std, Tensor.std, torch.var_mean, torch.std_mean),
    **_named("pow", torch.pow, Tensor.pow, Tensor.pow_, Tensor.__pow__, Tensor.__rpow__, Tensor.__ipow__,
             torch.float_power, Tensor.float_power),
    **_named("division by a tensor", torch.div, Tensor.div, Tensor.div_, torch.true_divide, Tensor.true_divide,
             Tensor.__truediv__, Tensor.__rtruediv__, Tensor.__itruediv__),
}


def _nonlinear_power(func, args: tuple, kwargs: dict) -> bool:
    """``x ** e`` with ``e`` neither 0 nor 1 (or a tensor), or ``c ** x``."""
    if func is Tensor.__rpow__:
        return True
    e = args[1] if len(args) > 1 else kwargs.get("exponent", kwargs.get("other"))
    if isinstance(args[0] if args else None, (int, float)):  # torch.pow(2, x): exponential in x
        return True
    return isinstance(e, Tensor) or float(e) not in (0.0, 1.0)


def _by_a_tensor(func, args: tuple, kwargs: dict) -> bool:
    """``a / b`` with a divisor ``b`` on the gradient path."""
    divisor = args[0] if func is Tensor.__rtruediv__ else (args[1] if len(args) > 1 else kwargs.get("other"))
    return isinstance(divisor, Tensor) and divisor.requires_grad


# the ordinary functions that are nonlinear only for some arguments: counted when this says so
WHEN: dict[Callable, Callable[..., bool]] = {
    **{f: _nonlinear_power for f, name in ORDINARY.items() if name == "pow"},
    **{f: _by_a_tensor for f, name in ORDINARY.items() if name == "division by a tensor"},
}

_HINTS = {
    "sigmoid": " (squeeze-excitation?)",
    "hardsigmoid": " (squeeze-excitation?)",
    "softmax": " (attention written out by hand? a Hugging Face model: load it with attn_implementation='sdpa')",
    "erf": " (a GELU written with erf?)",
    "comparison": " (value-dependent: a mask such as z * (z > 0), or torch.where?)",
    "rsqrt": " (a norm written out by hand, such as an RMSNorm?)",
    "var/std": " (a norm written out by hand?)",
    "pow": " (a norm or a GELU written out by hand?)",
    "division by a tensor": " (a norm written out by hand?)",
}
_UNSEEN_HINT = {"autograd.Function": " (a rule of yours? declare it: SoftenedRule(..., autograd=(ItsFunction,)))"}


@dataclass
class Coverage:
    """What one forward pass in ``soft_gates`` did: ``gated`` counts the calls given a soft
    backward per family, ``ordinary`` the nonlinear calls (on the gradient path) that kept
    their ordinary gradient, by operator."""

    gated: Counter = field(default_factory=Counter)
    ordinary: Counter = field(default_factory=Counter)
    recipe: str = ""  # the recipe of the options in effect
    opaque: Counter = field(default_factory=Counter)  # computations the mode could not look into
    unrecognised: Counter = field(default_factory=Counter)  # modules a module rule names but did not recognise

    @property
    def complete(self) -> bool:
        """True if something was gated and nothing nonlinear stayed ordinary or unseen."""
        return bool(self.gated) and not self.ordinary and not self.opaque

    @property
    def partial(self) -> bool:
        """True if some nonlinear calls kept their ordinary gradient, seen or not."""
        return bool(self.ordinary) or bool(self.opaque)

    def describe_ordinary(self) -> str:
        """``16 calls to sigmoid (squeeze-excitation?), 2 unseen: autograd.Function SwishAutoFn``."""
        seen = [f"{n} call{'s' if n != 1 else ''} to {name}{_HINTS.get(name, '')}"
                for name, n in self.ordinary.most_common()]
        unseen = [f"{n} computation{'s' if n != 1 else ''} the soft gates cannot see into ({name})"
                  + next((h for k, h in _UNSEEN_HINT.items() if name.startswith(k)), "")
                  for name, n in self.opaque.most_common()]
        return ", ".join(seen + unseen)

    def summary(self) -> str:
        """What a partial pullback is, in words, with no advice in any interface's terms."""
        return (f"{self.describe_ordinary()} kept their ordinary gradient: the pullback is partly a vanilla "
                f"gradient (coverage: {self})")

    def __str__(self) -> str:
        gated = ", ".join(f"{family} {n}" for family, n in self.gated.items()) or "nothing"
        ordinary = ", ".join(f"{name} {n}" for name, n in self.ordinary.most_common()) or "nothing"
        text = f"gated: {gated}; ordinary: {ordinary}"
        if self.opaque:
            text += "; unseen: " + ", ".join(f"{name} {n}" for name, n in self.opaque.most_common())
        if self.unrecognised:
            text += "; not recognised: " + ", ".join(f"{name} {n}" for name, n in self.unrecognised.most_common())
        return text
