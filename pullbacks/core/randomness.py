"""Refuse forward passes that draw random numbers: dropout in training mode, stochastic depth,
``bernoulli``/``rand*`` inside a model. Two calls of such a model give two explanations, and
each draw moves the user's global RNG.

:func:`check_draw` is asked before a call runs (by the soft gates' mode, and by
:class:`NoRandomMode` for the vanilla gradient and the evaluation's probe), so the refused
call never draws: the RNG state is as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


class RandomForwardError(ValueError):
    """The model's forward pass draws random numbers."""


def _arg(name: str, position: int, default: Any) -> Callable[[tuple, dict], Any]:
    def read(args: tuple, kwargs: dict) -> Any:
        return kwargs[name] if name in kwargs else args[position] if len(args) > position else default

    return read


def _dropout(train: str, position: int, default: bool = True) -> Callable[[tuple, dict], bool]:
    training, p = _arg(train, position, default), _arg("p", 1, 0.5)
    return lambda args, kwargs: bool(training(args, kwargs)) and float(p(args, kwargs)) > 0


_always = lambda args, kwargs: True  # noqa: E731
_sdpa_p = _arg("dropout_p", 4, 0.0)

# each random call, and when it draws (from its arguments)
DRAWS: dict[Callable, Callable[[tuple, dict], bool]] = {
    F.dropout: _dropout("training", 2),
    F.dropout1d: _dropout("training", 2),
    F.dropout2d: _dropout("training", 2),
    F.dropout3d: _dropout("training", 2),
    F.alpha_dropout: _dropout("training", 2),
    F.feature_alpha_dropout: _dropout("training", 2),
    torch.dropout: _dropout("train", 2),
    torch.feature_dropout: _dropout("train", 2),
    torch.alpha_dropout: _dropout("train", 2),
    torch.feature_alpha_dropout: _dropout("train", 2),
    F.rrelu: _arg("training", 3, False),
    torch.rrelu: _arg("training", 3, False),
    F.scaled_dot_product_attention: lambda args, kwargs: float(_sdpa_p(args, kwargs)) > 0,
    **{
        f: _always
        for f in (
            torch.rand,
            torch.rand_like,
            torch.randn,
            torch.randn_like,
            torch.randint,
            torch.randint_like,
            torch.randperm,
            torch.bernoulli,
            torch.normal,
            torch.poisson,
            torch.multinomial,
            Tensor.bernoulli,
            Tensor.bernoulli_,
            Tensor.uniform_,
            Tensor.normal_,
            Tensor.random_,
            Tensor.exponential_,
            Tensor.geometric_,
            Tensor.cauchy_,
            Tensor.log_normal_,
            Tensor.multinomial,
        )
    },
}


def _name(func: Callable) -> str:
    owner = {F: "torch.nn.functional", torch: "torch", Tensor: "Tensor"}
    for module, prefix in owner.items():
        if getattr(module, getattr(func, "__name__", ""), None) is func:
            return f"{prefix}.{func.__name__}"
    return getattr(func, "__qualname__", repr(func))


def check_draw(func: Callable, args: tuple, kwargs: dict) -> None:
    """Raise :class:`RandomForwardError` if ``func(*args, **kwargs)`` would draw random numbers."""
    when = DRAWS.get(func)
    if when is None or not when(args, kwargs):
        return
    raise RandomForwardError(
        f"the model draws random numbers in its forward pass ({_name(func)}: dropout or stochastic depth in "
        "training mode, or a random draw inside the model), so two calls would give two different explanations; "
        "call model.eval() first (or switch that layer's randomness off, e.g. training=False for a functional "
        "dropout); nothing was drawn and the model is unchanged"
    )


class NoRandomMode(TorchFunctionMode):
    """Refuses every random draw made while it is active (see :func:`check_draw`)."""

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in DRAWS:
            check_draw(func, args, kwargs)
        return func(*args, **kwargs)


def check_deterministic(model: nn.Module, x: Tensor) -> None:
    """One forward pass of ``model`` on ``x`` (no gradient) that raises
    :class:`RandomForwardError` at the first random draw, before it is made."""
    with torch.no_grad(), NoRandomMode():
        model(x)
