"""The graph walk: coverage read off what autograd recorded (docs/method.md, "Coverage").

Every backward node on a path from the outputs to an input is exactly one of:

1. **soft**: a node of the package's own backward functions or of a rule in effect
   (``rule.autograd``): what the rules gave a soft backward;
2. **linear**: on the allowlist (:mod:`.allowlist`), its backward linear in the incoming
   gradient and independent of the input's values;
3. a **product** of two tensors that both depend on the input (``h * h``, ``q @ kᵀ``): exact
   by the product rule, listed on its own;
4. **ordinary**: anything else, named as a user would recognise it (``abs``, ``amax``,
   ``a TorchScript graph``, ``a checkpoint's recompute``; otherwise the node's own name),
   so that an operator nobody here has heard of is reported by default.

A node is on a path when an input can be reached from it: a leaf of ``inputs`` when they
are known (the pullback's ``x``), otherwise any leaf that is not an ``nn.Parameter``. Nodes
that only transform weights are not on the path and are not counted.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
from torch import Tensor, nn

from .allowlist import FACTORS, LINEAR, WHEN
from .rules.base import Rule, Softened, SoftGate
from .rules.module import Straight

CHECKPOINT_HELP = (
    "activation checkpointing re-runs the forward pass during the backward pass, outside the soft gates, "
    "so the pullback would be wrong; turn it off for explanations: for torch.utils.checkpoint call the "
    "module without it, for a torchvision DenseNet build it with memory_efficient=False, for timm models "
    "call model.set_grad_checkpointing(False)"
)
CHECKPOINT = "a checkpoint's recompute"

_TOP_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # torch >= 2.8
_CHECKPOINT_FILE = os.path.join("torch", "utils", "checkpoint.py")


def check_no_checkpoint_hooks() -> None:
    """Raise if a call is being recorded under non-reentrant checkpointing (its saved-tensor
    hooks would make autograd re-run the call without its soft backward). Older torch
    versions cannot list the hooks: there the call stack is searched for
    ``torch.utils.checkpoint`` instead."""
    if _TOP_HOOKS is None:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.endswith(_CHECKPOINT_FILE):
                raise RuntimeError(CHECKPOINT_HELP)
            frame = frame.f_back
        return
    hooks = _TOP_HOOKS(False)
    if hooks is not None and any(
        "checkpoint" in (getattr(h, "__module__", "") or "") or "checkpoint" in getattr(h, "__qualname__", "")
        for h in hooks
    ):
        raise RuntimeError(CHECKPOINT_HELP)


# names a user recognises, for node names (without "Backward<n>") that would not say it
NAMES = {
    "Var": "var/std",
    "Std": "var/std",
    "VarMean": "var/std",
    "StdMean": "var/std",
    "ClampMin": "clamp",
    "ClampMax": "clamp",
    "Clamp": "clamp",
    "Minimum": "maximum",
    "Maximum": "maximum",
    "LinalgVectorNorm": "vector norm",
    "Norm": "vector norm",
    "NativeLayerNorm": "layer_norm",
    "NativeGroupNorm": "group_norm",
    "MaxPool2DWithIndices": "max_pool2d",
    "MaxPool3DWithIndices": "max_pool3d",
    "AdaptiveMaxPool2D": "adaptive_max_pool",
    "AdaptiveMaxPool1D": "adaptive_max_pool",
    "ValueSelectingReduction": "max/min along a dimension",
    "CheckpointFunction": CHECKPOINT,
    "DifferentiableGraph": "a TorchScript graph",
    "CopySlices": "an in-place operation on a slice",
    "LogSoftmax": "log_softmax",
    "SpecialErf": "erf",
    "Hardsigmoid": "hardsigmoid",
    "LogSigmoid": "logsigmoid",
}
_SUFFIX = re.compile(r"Backward\d*$")
_WORDS = re.compile(r"(?<=[a-z])(?=[A-Z])")


def node_name(node_type: type) -> str:
    """What a user calls the operator of a backward node type: ``AmaxBackward0`` -> ``amax``,
    ``LogSoftmaxBackward0`` -> ``log_softmax``, a custom function by its class."""
    if issubclass(node_type, torch.autograd.function.BackwardCFunction):
        cls = getattr(node_type, "_forward_cls", None)
        return f"autograd.Function {getattr(cls, '__name__', node_type.__name__)}"
    base = _SUFFIX.sub("", node_type.__name__)
    return NAMES.get(base) or _WORDS.sub("_", base).lower()


@dataclass
class Reading:
    """What one walk found: ``ordinary`` and ``products`` by name, and whether a reentrant
    checkpoint (its segment re-run ungated) was on the path."""

    ordinary: Counter = field(default_factory=Counter)
    products: Counter = field(default_factory=Counter)
    checkpoint: bool = False


class _Kinds:
    """How one set of rules classifies node types: ``"soft"``, ``"linear"``, ``"factors"``,
    ``"when"`` or an ordinary name; each type classified once."""

    def __init__(self, rules: tuple[Rule, ...]):
        self.owned = (SoftGate, Softened, Straight, *(f for r in rules for f in r.autograd))
        self.nodes = {prefix: r.family for r in rules for prefix in r.nodes}
        self.known: dict[type, str] = {}

    def __call__(self, node_type: type) -> str:
        kind = self.known.get(node_type)
        if kind is None:
            if len(self.known) > 4096:  # Function classes made per call would otherwise pile up
                self.known.clear()
            kind = self.known[node_type] = self._classify(node_type)
        return kind

    def _classify(self, node_type: type) -> str:
        name = node_type.__name__
        cls = getattr(node_type, "_forward_cls", None)
        if issubclass(node_type, torch.autograd.function.BackwardCFunction) and cls is not None:
            if issubclass(cls, self.owned):
                return "soft"
            if "Checkpoint" in cls.__name__:
                return CHECKPOINT
        if name in LINEAR:
            return "linear"
        if name in FACTORS:
            return "factors"
        if name in WHEN:
            return "when"
        for prefix, family in self.nodes.items():
            if name.startswith(prefix):
                return f"{family} ({name}) run by TorchScript, torch.ops or a traced module"
        return node_name(node_type)


_BY_RULES: dict[tuple[Rule, ...], _Kinds] = {}


def _kinds(rules: tuple[Rule, ...]) -> _Kinds:
    kinds = _BY_RULES.get(rules)
    if kinds is None:
        if len(_BY_RULES) > 64:
            _BY_RULES.clear()
        kinds = _BY_RULES[rules] = _Kinds(rules)
    return kinds


def walk(outputs: Iterable[Any], rules: Iterable[Rule], inputs: tuple | None = None) -> Reading:
    """Classify every backward node on a path from ``outputs`` (tensors, or their backward
    nodes) to ``inputs`` under ``rules`` (the rules in effect), module docstring. ``inputs``:
    the leaves that count as inputs (default: every leaf that is not an ``nn.Parameter``)."""
    kinds = _kinds(tuple(rules))
    wanted = None if inputs is None else {id(t) for t in inputs}
    children: dict[Any, tuple] = {}
    order: list = []  # children before parents
    for out in outputs:
        root = out.grad_fn if isinstance(out, Tensor) else out
        if root is None or root in children:
            continue
        children[root] = kids = tuple(n for n, _ in root.next_functions)
        stack = [(root, iter(kids))]
        while stack:
            node, it = stack[-1]
            for child in it:
                if child is not None and child not in children:
                    children[child] = grand = tuple(n for n, _ in child.next_functions)
                    stack.append((child, iter(grand)))
                    break
            else:
                stack.pop()
                order.append(node)
    reaches: dict[Any, bool] = {}
    reading = Reading()
    for node in order:
        kids = children[node]
        if not kids and hasattr(node, "variable"):  # AccumulateGrad: a leaf
            v = node.variable
            reaches[node] = (id(v) in wanted) if wanted is not None else not isinstance(v, nn.Parameter)
            continue
        on_path = tuple(c is not None and reaches.get(c, False) for c in kids)
        reaches[node] = on = any(on_path)
        if not on:
            continue
        kind = kinds(type(node))
        if kind in ("soft", "linear"):
            continue
        name = type(node).__name__
        if kind == "factors":
            if sum(on_path[i] for i in FACTORS[name] if i < len(on_path)) > 1:
                reading.products[node_name(type(node))] += 1
        elif kind == "when":
            why = WHEN[name](node, on_path)
            if why is not None:
                reading.ordinary[why] += 1
        else:
            reading.ordinary[kind] += 1
            reading.checkpoint |= kind == CHECKPOINT
    return reading
