"""Coverage: which calls of a forward pass got a soft backward, and which nonlinear calls
kept their ordinary gradient (docs/method.md, "Coverage").

A pullback through a network whose squeeze-excitation sigmoids or hand-written softmax
stay ordinary is partly a vanilla gradient. The mode counts both kinds of calls; the
pullback and the ascent warn (:class:`PartialPullbackWarning`) or, with ``strict=True``,
raise (:class:`PartialPullbackError`) when the second count is not zero.
"""

from __future__ import annotations

import warnings
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
    **_named("adaptive_max_pool", F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
             F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
             F.adaptive_max_pool3d_with_indices),
}

_HINTS = {
    "sigmoid": " (squeeze-excitation?)",
    "hardsigmoid": " (squeeze-excitation?)",
    "softmax": " (attention written out by hand?)",
    "erf": " (a GELU written with erf?)",
}


@dataclass
class Coverage:
    """What one forward pass in ``soft_gates`` did: ``gated`` counts the calls given a soft
    backward per family, ``ordinary`` the nonlinear calls (on the gradient path) that kept
    their ordinary gradient, by operator."""

    gated: Counter = field(default_factory=Counter)
    ordinary: Counter = field(default_factory=Counter)

    @property
    def complete(self) -> bool:
        """True if something was gated and nothing nonlinear stayed ordinary."""
        return bool(self.gated) and not self.ordinary

    def describe_ordinary(self) -> str:
        """``16 calls to sigmoid (squeeze-excitation?), 12 calls to softmax ...``."""
        return ", ".join(f"{n} call{'s' if n != 1 else ''} to {name}{_HINTS.get(name, '')}"
                         for name, n in self.ordinary.most_common())

    def __str__(self) -> str:
        gated = ", ".join(f"{family} {n}" for family, n in self.gated.items()) or "nothing"
        ordinary = ", ".join(f"{name} {n}" for name, n in self.ordinary.most_common()) or "nothing"
        return f"gated: {gated}; ordinary: {ordinary}"


class PartialPullbackWarning(UserWarning):
    """Some nonlinear calls kept their ordinary gradient: the pullback is partly vanilla."""


class PartialPullbackError(RuntimeError):
    """``strict=True`` and some nonlinear calls kept their ordinary gradient."""


def report(coverage: Coverage, strict: bool, *, stacklevel: int = 3) -> None:
    """Warn, or raise if ``strict``, when nonlinear calls kept their ordinary gradient.

    Silence the warning with ``warnings.simplefilter("ignore", PartialPullbackWarning)``.
    """
    if not coverage.ordinary:
        return
    message = (f"{coverage.describe_ordinary()} kept their ordinary gradient: the pullback is partly a "
               "vanilla gradient (coverage: " + str(coverage) + ")")
    if strict:
        raise PartialPullbackError(message + "; strict=True makes this an error, strict=False a warning")
    warnings.warn(message + "; strict=True makes this an error; silence it with "
                  "warnings.simplefilter('ignore', pullbacks.PartialPullbackWarning)",
                  PartialPullbackWarning, stacklevel=stacklevel)


# ----------------------------------------------------------------------------- checkpointing

CHECKPOINT_HELP = (
    "activation checkpointing re-runs the forward pass during the backward pass, outside the soft gates, "
    "so the pullback would be wrong; turn it off for explanations: for torch.utils.checkpoint call the "
    "module without it, for a torchvision DenseNet build it with memory_efficient=False, for timm models "
    "call model.set_grad_checkpointing(False)")


def check_no_checkpoint_hooks() -> None:
    """Raise if a call is being recorded under non-reentrant checkpointing (its saved-tensor
    hooks would make autograd re-run the call without its soft backward)."""
    hooks = torch._C._autograd._top_saved_tensors_default_hooks(False)
    if hooks is not None and any("checkpoint" in (getattr(h, "__module__", "") or "") or
                                 "checkpoint" in getattr(h, "__qualname__", "") for h in hooks):
        raise RuntimeError(CHECKPOINT_HELP)


def check_no_checkpoint_nodes(output: Tensor, limit: int = 1_000_000) -> None:
    """Raise if the autograd graph of ``output`` holds a reentrant checkpoint, whose
    segment ran without gradients in the forward and will re-run ungated."""
    seen, stack = set(), [output.grad_fn]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "Checkpoint" in type(node).__name__:
            raise RuntimeError(CHECKPOINT_HELP)
        stack.extend(n for n, _ in node.next_functions)
