"""``soft_gates()``: route every ReLU-family and 2-D max-pool call to the soft gates.

A :class:`torch.overrides.TorchFunctionMode` sees each call as it happens, whether it
comes from a module (``nn.ReLU``, reused or not, in place or not), a functional call
(``F.relu``, ``torch.relu``, ``Tensor.relu_``) or a pooling layer. Nothing is attached to
the model, so nothing has to be undone: the model is never touched.

The mode also watches eval-mode ``F.batch_norm`` calls and additions onto their outputs
(a ResNet's ``out += identity``), without changing them: when such an output then enters
a gate, the gate keeps a :class:`~pullbacks.gates.Replay` (the inputs autograd keeps
anyway) instead of its own copy of ``z``, which saves one activation-sized buffer per gate.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from torch.utils.weak import WeakIdKeyDictionary

from .gates import (GATES, POOLS, Replay, SoftHardtanh, SoftLeakyReLU, SoftMaxPool2d, SoftReLU,
                    replay_add, replay_batch_norm)


def check_temperature(value, name: str = "temperature") -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number > 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{name} must be a finite number > 0, got {value!r}; "
            f"small values (e.g. 0.01) approach the vanilla gradient, the paper uses 0.3"
        )
    return value


def _arg(args: tuple, kwargs: dict, index: int, name: str, default):
    return args[index] if len(args) > index else kwargs.get(name, default)


class SoftGateMode(TorchFunctionMode):
    """Routes relu-family and max-pool calls to backward-only soft gates.

    ``gates_seen`` counts the calls that were given a soft gate (only calls whose input
    requires a gradient, with grad mode on, are gated: the others have no backward pass).
    """

    def __init__(self, temperature: float, pool_temperature: float, gate: str, pool: str):
        super().__init__()
        self.temperature = temperature
        self.pool_temperature = pool_temperature
        self.gate = gate
        self.pool = pool
        self.gates_seen = 0
        relu = self._relu
        self._handlers = {
            F.relu: relu,
            torch.relu: relu,
            torch.Tensor.relu: relu,
            torch.relu_: self._relu_inplace,
            torch.Tensor.relu_: self._relu_inplace,
            F.relu6: self._relu6,
            torch._C._nn.relu6: self._relu6,
            torch._C._nn.relu6_: self._relu6_inplace,
            F.hardtanh: self._hardtanh,
            torch._C._nn.hardtanh: self._hardtanh,
            torch._C._nn.hardtanh_: self._hardtanh_inplace,
            F.leaky_relu: self._leaky_relu,
            torch._C._nn.leaky_relu: self._leaky_relu,
            torch._C._nn.leaky_relu_: self._leaky_relu_inplace,
            F.max_pool2d: self._max_pool2d,
            torch.max_pool2d: self._max_pool2d,
            F.max_pool2d_with_indices: self._max_pool2d_with_indices,
        }
        # calls that run unchanged but whose outputs get a replay: output -> (version, Replay)
        self._replays = WeakIdKeyDictionary()
        add = self._add
        self._recorders = {
            F.batch_norm: self._batch_norm,
            torch.add: add,
            torch.Tensor.add: add,
            torch.Tensor.__add__: add,
            torch.Tensor.add_: add,
            torch.Tensor.__iadd__: add,
        }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = self._handlers.get(func)
        if handler is not None and torch.is_grad_enabled():
            x = args[0] if args else kwargs.get("input", kwargs.get("self"))
            if isinstance(x, torch.Tensor) and x.requires_grad:
                self.gates_seen += 1
                return handler(args, kwargs)
        recorder = self._recorders.get(func)
        if recorder is not None and torch.is_grad_enabled():
            return recorder(func, args, kwargs)
        return func(*args, **kwargs)

    def __exit__(self, *exc):
        self._replays = WeakIdKeyDictionary()  # hold no tensor past the block
        return super().__exit__(*exc)

    # --- replays -------------------------------------------------------------------------
    def _replay(self, z) -> Replay | None:
        """The replay of ``z``, if ``z`` came out of a recorded call and neither it nor the
        replay's inputs were modified since."""
        entry = self._replays.get(z) if isinstance(z, torch.Tensor) else None
        if entry is None:
            return None
        version, replay = entry
        return replay if z._version == version and replay.unchanged() else None

    def _batch_norm(self, func, args, kwargs):
        out = func(*args, **kwargs)
        x, mean, var = (_arg(args, kwargs, i, n, None) for i, n in
                        enumerate(("input", "running_mean", "running_var")))
        weight, bias = _arg(args, kwargs, 3, "weight", None), _arg(args, kwargs, 4, "bias", None)
        training, eps = _arg(args, kwargs, 5, "training", False), _arg(args, kwargs, 7, "eps", 1e-5)
        if not training and mean is not None and var is not None and out.requires_grad:
            self._replays[out] = (out._version, replay_batch_norm(x, mean, var, weight, bias, float(eps)))
        return out

    def _add(self, func, args, kwargs):
        a = self._input(args, kwargs)
        b = _arg(args, kwargs, 1, "other", None)
        alpha = kwargs.get("alpha", 1)
        if kwargs.get("out") is not None or not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return func(*args, **kwargs)
        ra, rb = self._replay(a), self._replay(b)
        out = func(*args, **kwargs)
        fits = lambda t: t.shape == out.shape and t.dtype == out.dtype  # noqa: E731
        replay = None
        if ra is not None and fits(a):
            replay = replay_add(ra, b if rb is None else rb, alpha)
        elif rb is not None and fits(b) and alpha == 1 and out is not a:  # a + b == b + a exactly
            replay = replay_add(rb, a)
        if replay is not None and isinstance(out, torch.Tensor) and out.requires_grad:
            self._replays[out] = (out._version, replay)
        return out

    # --- ReLU family -------------------------------------------------------------------
    def _input(self, args, kwargs):
        return args[0] if args else kwargs.get("input", kwargs.get("self"))

    def _relu(self, args, kwargs, inplace=None):
        if inplace is None:
            inplace = bool(_arg(args, kwargs, 1, "inplace", False))
        x = self._input(args, kwargs)
        return SoftReLU.apply(x, self.temperature, self.gate, inplace, self._replay(x))

    def _relu_inplace(self, args, kwargs):
        return self._relu(args, kwargs, inplace=True)

    def _hardtanh(self, args, kwargs, inplace=None):
        lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
        hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
        if inplace is None:
            inplace = bool(_arg(args, kwargs, 3, "inplace", False))
        x = self._input(args, kwargs)
        return SoftHardtanh.apply(x, lo, hi, self.temperature, self.gate, inplace, self._replay(x))

    def _hardtanh_inplace(self, args, kwargs):
        return self._hardtanh(args, kwargs, inplace=True)

    def _relu6(self, args, kwargs, inplace=None):
        if inplace is None:
            inplace = bool(_arg(args, kwargs, 1, "inplace", False))
        x = self._input(args, kwargs)
        return SoftHardtanh.apply(x, 0.0, 6.0, self.temperature, self.gate, inplace, self._replay(x))

    def _relu6_inplace(self, args, kwargs):
        return self._relu6(args, kwargs, inplace=True)

    def _leaky_relu(self, args, kwargs, inplace=None):
        slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        if inplace is None:
            inplace = bool(_arg(args, kwargs, 2, "inplace", False))
        x = self._input(args, kwargs)
        return SoftLeakyReLU.apply(x, slope, self.temperature, self.gate, inplace, self._replay(x))

    def _leaky_relu_inplace(self, args, kwargs):
        return self._leaky_relu(args, kwargs, inplace=True)

    # --- max pooling -------------------------------------------------------------------
    def _max_pool2d(self, args, kwargs, return_indices=None):
        x = self._input(args, kwargs)
        kernel_size = _arg(args, kwargs, 1, "kernel_size", None)
        stride = _arg(args, kwargs, 2, "stride", None)
        if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
            stride = kernel_size
        padding = _arg(args, kwargs, 3, "padding", 0)
        dilation = _arg(args, kwargs, 4, "dilation", 1)
        ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
        if return_indices is None:
            return_indices = bool(_arg(args, kwargs, 6, "return_indices", False))
        return SoftMaxPool2d.apply(
            x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
            self.pool_temperature, self.pool,
        )

    def _max_pool2d_with_indices(self, args, kwargs):
        return self._max_pool2d(args, kwargs, return_indices=True)


def make_mode(temperature: float = 0.3, pool_temperature: float | None = None,
              gate: str = "sigmoid", pool: str = "soft") -> SoftGateMode:
    """Validate the options and build a :class:`SoftGateMode` (not yet entered)."""
    temperature = check_temperature(temperature)
    pool_temperature = temperature if pool_temperature is None else check_temperature(
        pool_temperature, "pool_temperature")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return SoftGateMode(temperature, pool_temperature, gate, pool)


@contextmanager
def soft_gates(temperature: float = 0.3, pool_temperature: float | None = None,
               gate: str = "sigmoid", pool: str = "soft") -> Iterator[SoftGateMode]:
    """Give every ReLU-family and 2-D max-pool call made inside the block a backward-only
    soft gate: ``relu'(z) = 1[z > 0]`` becomes ``s(z / T)`` and max pooling back-propagates
    through a soft max pool of temperature ``pool_temperature`` (default: ``temperature``).

    The forward pass is unchanged bit for bit. The gate is fixed when the forward call
    happens, so ``backward()`` may run after the block. Yields the mode, whose
    ``gates_seen`` counts the gated calls.

    >>> with pullbacks.soft_gates(temperature=0.3):
    ...     logit = model(x.requires_grad_())[0, 282]
    >>> logit.backward()            # x.grad is the excitation pullback
    """
    mode = make_mode(temperature, pool_temperature, gate, pool)
    with mode:
        yield mode
