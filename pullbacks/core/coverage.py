"""Coverage, the one policy: which calls of a forward pass got a soft backward, which
nonlinear calls kept their ordinary gradient, and what is done about it (docs/method.md,
"Coverage").

A pullback through a network whose squeeze-excitation sigmoids or hand-written softmax
stay ordinary is partly a vanilla gradient. The mode counts both kinds of calls
(:class:`Coverage`); :class:`CoverageCheck` then decides, in one place for every caller:

* nothing gated at all: a ValueError (the "pullback" would be a vanilla gradient);
* some calls ordinary: a :class:`PartialPullbackWarning`, once per check (a pullback, or a
  whole ascent), or with ``strict=True`` a :class:`PartialPullbackError`.

Both carry the :class:`Coverage`, so front ends format from it (``coverage.summary()``),
never from the message's text. ``soft_gates(strict=True)`` applies the same check when its
block exits.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .rules.base import Rule
from .table import gated_summary

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
}

_HINTS = {
    "sigmoid": " (squeeze-excitation?)",
    "hardsigmoid": " (squeeze-excitation?)",
    "softmax": " (attention written out by hand?)",
    "erf": " (a GELU written with erf?)",
    "comparison": " (value-dependent: a mask such as z * (z > 0), or torch.where?)",
}


@dataclass
class Coverage:
    """What one forward pass in ``soft_gates`` did: ``gated`` counts the calls given a soft
    backward per family, ``ordinary`` the nonlinear calls (on the gradient path) that kept
    their ordinary gradient, by operator."""

    gated: Counter = field(default_factory=Counter)
    ordinary: Counter = field(default_factory=Counter)
    recipe: str = ""  # the recipe of the options in effect
    opaque: Counter = field(default_factory=Counter)  # computations the mode could not look into

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
        return text


class PartialPullbackWarning(UserWarning):
    """Some nonlinear calls kept their ordinary gradient: the pullback is partly vanilla.
    ``.coverage`` is the :class:`Coverage` of the forward pass."""

    def __init__(self, coverage: Coverage) -> None:
        self.coverage = coverage
        super().__init__(f"{coverage.summary()}; strict=True makes this an error; silence it with "
                         "warnings.simplefilter('ignore', pullbacks.PartialPullbackWarning)")


class PartialPullbackError(RuntimeError):
    """``strict=True`` and some nonlinear calls kept their ordinary gradient.
    ``.coverage`` is the :class:`Coverage` of the forward pass."""

    def __init__(self, coverage: Coverage) -> None:
        self.coverage = coverage
        super().__init__(f"{coverage.summary()}; strict=True makes this an error, strict=False a warning")


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stacklevel() -> int:
    """The stack level of the first frame outside this package (where the warning points)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class CoverageCheck:
    """The coverage policy for one pullback or one whole ascent (see the module docstring)."""

    def __init__(self, strict: bool, rules: Iterable[Rule] = ()) -> None:
        self.strict, self.rules, self.warned, self.walked = strict, tuple(rules), False, False

    def partial(self, coverage: Coverage) -> None:
        """Warn (once) or raise if ``strict`` when nonlinear calls kept their ordinary gradient."""
        if not coverage.partial:
            return
        if self.strict:
            raise PartialPullbackError(coverage)
        if not self.warned:
            self.warned = True
            warnings.warn(PartialPullbackWarning(coverage), stacklevel=_stacklevel())

    def __call__(self, coverage: Coverage, model_name: str, output: Tensor | None = None,
                 gradless: bool = False) -> None:
        """The whole policy after a forward pass of ``model_name`` whose result is ``output``:
        its autograd graph is searched (on the first pass, and on every pass that ran gated
        calls without gradients) for activation checkpoints and for computations the mode
        could not see (:func:`graph_report`)."""
        if output is not None and (not self.walked or gradless):
            checkpoint, opaque = graph_report(output)
            if checkpoint:
                raise RuntimeError(CHECKPOINT_HELP)
            coverage.opaque.update(opaque)
            self.walked = True
        if not coverage.gated:
            raise ValueError(
                f"no call that pullbacks gates was seen in the forward pass of {model_name} (ordinary nonlinear "
                f"calls: {coverage.describe_ordinary() or 'none'}), so the pullback would silently equal the "
                f"vanilla gradient; pullbacks gates: {gated_summary(self.rules)}. For an operator not listed, "
                "write a rule of your own (pullbacks.GateRule, docs/extending.md); for a vanilla gradient use "
                "gradient_ascent(..., method='gradient') or torch.autograd.grad")
        self.partial(coverage)


# ----------------------------------------------------------------------------- checkpointing

CHECKPOINT_HELP = (
    "activation checkpointing re-runs the forward pass during the backward pass, outside the soft gates, "
    "so the pullback would be wrong; turn it off for explanations: for torch.utils.checkpoint call the "
    "module without it, for a torchvision DenseNet build it with memory_efficient=False, for timm models "
    "call model.set_grad_checkpointing(False)")


_TOP_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # torch >= 2.8
_CHECKPOINT_FILE = os.path.join("torch", "utils", "checkpoint.py")


def check_no_checkpoint_hooks() -> None:
    """Raise if a call is being recorded under non-reentrant checkpointing (its saved-tensor
    hooks would make autograd re-run the call without its soft backward). Older torch
    versions cannot list the hooks: there the call stack is searched for
    ``torch.utils.checkpoint`` instead."""
    if _TOP_HOOKS is None:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.endswith(_CHECKPOINT_FILE):
                raise RuntimeError(CHECKPOINT_HELP)
            frame = frame.f_back
        return
    hooks = _TOP_HOOKS(False)
    if hooks is not None and any("checkpoint" in (getattr(h, "__module__", "") or "") or
                                 "checkpoint" in getattr(h, "__qualname__", "") for h in hooks):
        raise RuntimeError(CHECKPOINT_HELP)


# backward nodes of operators the rule table covers: met in the graph of a pullback, they were
# computed where the mode could not see them (TorchScript, torch.ops, a traced or exported module)
_HARD_NODES = {
    "ReluBackward0": "relu", "HardtanhBackward0": "hardtanh", "LeakyReluBackward0": "leaky_relu",
    "MaxPool2DWithIndicesBackward0": "max_pool2d", "SiluBackward0": "silu", "GeluBackward0": "gelu",
    "HardswishBackward0": "hardswish", "MishBackward0": "mish", "NativeLayerNormBackward0": "layer_norm",
    "NativeGroupNormBackward0": "group_norm",
}


def _ours() -> tuple[type, ...]:
    from .rules.base import SoftGate, Softened
    from .rules.norm import HeldLayerNorm
    from .rules.pool import SoftMaxPool2d

    return SoftGate, Softened, HeldLayerNorm, SoftMaxPool2d


def _node_kind(node_type: type, ours: tuple[type, ...]) -> Optional[str]:
    """What a backward node of ``node_type`` means for the report: ``"checkpoint"``, a line for
    the opaque counter, or None (an ordinary node)."""
    name = node_type.__name__
    if "Checkpoint" in name:
        return "checkpoint"
    if name in _HARD_NODES or "ScaledDotProduct" in name:
        op = _HARD_NODES.get(name, "scaled_dot_product_attention")
        return f"{op} run by TorchScript, torch.ops or a traced module"
    if issubclass(node_type, torch.autograd.function.BackwardCFunction):
        cls = getattr(node_type, "_forward_cls", None)
        if cls is not None and not issubclass(cls, ours):
            return f"autograd.Function {cls.__name__}"
    return None


_KINDS: dict[type, Optional[str]] = {}  # node type -> _node_kind (a few dozen types; each is classified once)


def graph_report(output: Tensor, limit: int = 1_000_000) -> tuple[bool, Counter]:
    """Search the autograd graph of ``output``: whether it holds a reentrant checkpoint
    (whose segment ran without gradients and will re-run ungated), and what the mode could
    not see: hard backward nodes of covered operators (``relu (TorchScript, torch.ops or a
    traced module?)``) and custom ``torch.autograd.Function`` classes that are not the package's
    (timm's memory-efficient ``SwishAutoFn`` and the like), by name."""
    ours, opaque, kinds = _ours(), Counter(), _KINDS
    seen, stack = set(), [output.grad_fn]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        t = type(node)
        kind = kinds.get(t, False)
        if kind is False:
            if len(kinds) > 4096:  # Function classes made per call would otherwise pile up
                kinds.clear()
            kind = kinds[t] = _node_kind(t, ours)
        if kind is not None:
            if kind == "checkpoint":
                return True, opaque
            opaque[kind] += 1
        stack.extend(n for n, _ in node.next_functions)
    return False, opaque
