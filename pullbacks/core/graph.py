"""The graph walk: what the mode could not see, read off the autograd graph of a forward
pass's output.

* a reentrant activation checkpoint (its segment ran without gradients and re-runs ungated),
  or a call recorded under non-reentrant checkpointing (:func:`check_no_checkpoint_hooks`);
* a backward node of an operator some rule in effect covers (``rule.nodes``): the call ran
  where the mode could not intercept it (TorchScript, ``torch.ops``, a traced module);
* a custom ``torch.autograd.Function`` that no rule in effect declares (``rule.autograd``):
  a computation the soft gates cannot look into (timm's ``SwishAutoFn`` and the like).

Nothing here names an operator: both tables are read from the rules.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Iterable, Optional

import torch
from torch import Tensor

from .rules.base import Rule, Softened, SoftGate
from .rules.module import Straight

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


class _Kinds:
    """What a backward node type means under one set of rules: ``"checkpoint"``, a line for the
    unseen counter, or None (an ordinary node). Each type is classified once per rule set."""

    def __init__(self, rules: tuple[Rule, ...]):
        self.owned = (SoftGate, Softened, Straight, *(f for r in rules for f in r.autograd))
        self.nodes = {prefix: r.family for r in rules for prefix in r.nodes}
        self.known: dict[type, Optional[str]] = {}

    def __call__(self, node_type: type) -> Optional[str]:
        kind = self.known.get(node_type, False)
        if kind is False:
            if len(self.known) > 4096:  # Function classes made per call would otherwise pile up
                self.known.clear()
            kind = self.known[node_type] = self._classify(node_type)
        return kind

    def _classify(self, node_type: type) -> Optional[str]:
        name = node_type.__name__
        if "Checkpoint" in name:
            return "checkpoint"
        for prefix, family in self.nodes.items():
            if name.startswith(prefix):
                return f"{family} ({name}) run by TorchScript, torch.ops or a traced module"
        if issubclass(node_type, torch.autograd.function.BackwardCFunction):
            cls = getattr(node_type, "_forward_cls", None)
            if cls is not None and not issubclass(cls, self.owned):
                return f"autograd.Function {cls.__name__}"
        return None


_BY_RULES: dict[tuple[Rule, ...], _Kinds] = {}


def graph_report(output: Tensor, rules: Iterable[Rule], limit: int = 1_000_000) -> tuple[bool, Counter]:
    """Search the autograd graph of ``output`` under ``rules`` (the rules in effect): whether it
    holds a reentrant checkpoint, and what the mode could not see, by name (module docstring)."""
    rules = tuple(rules)
    kinds = _BY_RULES.get(rules)
    if kinds is None:
        if len(_BY_RULES) > 64:
            _BY_RULES.clear()
        kinds = _BY_RULES[rules] = _Kinds(rules)
    opaque: Counter = Counter()
    seen, stack = set(), [output.grad_fn]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        kind = kinds(type(node))
        if kind is not None:
            if kind == "checkpoint":
                return True, opaque
            opaque[kind] += 1
        stack.extend(n for n, _ in node.next_functions)
    return False, opaque
