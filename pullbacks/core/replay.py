"""Replays: the memory-saving seam between the forward and the backward pass.

A soft gate needs its forward input ``z`` again in the backward pass. The plain way keeps
``z`` (a copy when the call overwrites it in place). When ``z`` came out of an eval-mode
batch norm (possibly plus a residual addition, as in a ResNet's ``out += identity``), the
inputs of that batch norm are kept by autograd anyway: a :class:`Replay` keeps only a
recipe, and the backward recomputes ``z`` bit for bit. That saves one activation-sized
buffer per gate at the price of one batch norm in the backward pass.

:class:`Recorder` watches the calls a replay can be made of; ``soft_gates(replay=False)``
runs without one, which gives the plain path (bit-identical results, more memory).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .calls import arg


class Replay:
    """A recipe that recomputes a tensor bit for bit by re-running the ops that made it.

    ``leaves`` are the tensors (or None) it reads; ``run(leaves)`` takes them from an
    iterator, in that order, and returns the tensor in a fresh buffer. ``run`` holds no
    tensor, so a rule keeps the leaves as saved tensors and ``run`` on its context.
    """

    __slots__ = ("run", "leaves", "versions")

    def __init__(self, run: Callable[[Iterator], Tensor], leaves: list):
        self.run, self.leaves = run, leaves
        self.versions = self._versions()

    def _versions(self) -> list:
        return [t._version for t in self.leaves if t is not None]

    def unchanged(self) -> bool:
        """True if no input was modified in place since the replay was recorded."""
        return self._versions() == self.versions

    def keep(self, ctx: Any) -> Callable[[Iterator], Tensor]:
        """Save the inputs on ``ctx`` (autograd checks they stay unmodified) and return ``run``."""
        ctx.save_for_backward(*self.leaves)
        return self.run


def replay_batch_norm(
    x: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Replay:
    """``F.batch_norm(x, mean, var, weight, bias, training=False, eps=eps)``, which is
    ``torch.batch_norm`` with the cuDNN flag of the moment."""
    cudnn = torch.backends.cudnn.enabled

    def run(leaves: Iterator) -> Tensor:  # the arguments are taken left to right
        return torch.batch_norm(
            next(leaves), next(leaves), next(leaves), next(leaves), next(leaves), False, 0.0, eps, cudnn
        )

    return Replay(run, [x, weight, bias, mean, var])


def replay_add(fresh: Replay, other: Replay | Tensor, alpha: float = 1) -> Replay:
    """``fresh + alpha * other`` where ``fresh`` is itself replayed (``other``: a tensor or a replay)."""
    first = fresh.run
    if isinstance(other, Replay):
        second = other.run

        def both(leaves: Iterator) -> Tensor:
            return first(leaves).add_(second(leaves), alpha=alpha)

        return Replay(both, fresh.leaves + other.leaves)

    def one(leaves: Iterator) -> Tensor:
        return first(leaves).add_(next(leaves), alpha=alpha)

    return Replay(one, fresh.leaves + [other])


class Recorder:
    """Runs eval-mode batch norms and additions onto their outputs unchanged, and remembers
    for each output the :class:`Replay` that recomputes it.

    Only outputs of at least ``MIN_ELEMENTS`` entries (256 KiB of float32) are recorded: below
    that the copy a gate keeps costs less than recording the replay (measured on the
    32×32 inputs of ``benchmarks/overhead.py``), and the memory it saves does not matter."""

    MIN_ELEMENTS = 1 << 16

    def __init__(self) -> None:
        self._replays: dict = {}  # id(output) -> (weak reference to it, its version, Replay)
        add = self._add
        self.functions = {
            F.batch_norm: self._batch_norm,
            torch.add: add,
            torch.Tensor.add: add,
            torch.Tensor.__add__: add,
            torch.Tensor.add_: add,
            torch.Tensor.__iadd__: add,
        }

    def clear(self) -> None:
        """Forget every output (hold no tensor past the block)."""
        self._replays = {}

    def _remember(self, out: Tensor, replay: Replay) -> None:
        """Remember ``out``'s replay until ``out`` is freed (so its inputs are not held longer)."""
        key, recorder = id(out), weakref.ref(self)  # no reference cycle: the garbage collector stays idle

        def forget(ref: object) -> None:
            replays = getattr(recorder(), "_replays", {})
            if replays.get(key, (None,))[0] is ref:
                del replays[key]

        self._replays[key] = (weakref.ref(out, forget), out._version, replay)

    def replay(self, z: Tensor) -> Replay | None:
        """The replay of ``z``, if ``z`` came out of a recorded call and neither it nor the
        replay's inputs were modified since."""
        entry = self._replays.get(id(z))
        if entry is None:
            return None
        ref, version, replay = entry
        return replay if ref() is z and z._version == version and replay.unchanged() else None

    def _batch_norm(self, func: Callable, args: tuple, kwargs: dict) -> Tensor:
        out = func(*args, **kwargs)
        if out.numel() < self.MIN_ELEMENTS:
            return out
        x, mean, var = (arg(args, kwargs, i, n, None) for i, n in enumerate(("input", "running_mean", "running_var")))
        weight, bias = arg(args, kwargs, 3, "weight", None), arg(args, kwargs, 4, "bias", None)
        training, eps = arg(args, kwargs, 5, "training", False), arg(args, kwargs, 7, "eps", 1e-5)
        if not training and mean is not None and var is not None and out.requires_grad:
            self._remember(out, replay_batch_norm(x, mean, var, weight, bias, float(eps)))
        return out

    def _add(self, func: Callable, args: tuple, kwargs: dict) -> Tensor:
        a = arg(args, kwargs, 0, "input", kwargs.get("self"))
        b = arg(args, kwargs, 1, "other", None)
        alpha = kwargs.get("alpha", 1)
        if kwargs.get("out") is not None or not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            return func(*args, **kwargs)
        ra, rb = self.replay(a), self.replay(b)
        out = func(*args, **kwargs)
        fits = lambda t: t.shape == out.shape and t.dtype == out.dtype  # noqa: E731
        replay = None
        if ra is not None and fits(a):
            replay = replay_add(ra, b if rb is None else rb, alpha)
        elif rb is not None and fits(b) and alpha == 1 and out is not a:  # a + b == b + a exactly
            replay = replay_add(rb, a)
        if replay is not None and isinstance(out, Tensor) and out.requires_grad:
            self._remember(out, replay)
        return out


def keep_input(ctx: Any, z: Tensor, inplace: bool, replay: Replay | None) -> None:
    """Keep what the backward pass needs to know ``z``: the replay's inputs if there is
    one, else ``z`` (a copy if the call is about to overwrite it)."""
    if replay is not None:
        ctx.replay = replay.keep(ctx)
    else:
        ctx.replay = None
        ctx.save_for_backward(z.clone() if inplace else z)


def saved_input(ctx: Any) -> tuple[Tensor, bool]:
    """``z`` again, and whether it sits in a fresh buffer that the backward may overwrite."""
    if ctx.replay is not None:
        return ctx.replay(iter(ctx.saved_tensors)), True
    return ctx.saved_tensors[0], False
