"""Input validation shared by the public functions: clear errors, nothing changed."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd

from .errors import ProblemTypeError, ProblemValueError

Targets = int | Sequence[int] | Tensor


def check_model(model: nn.Module) -> None:
    """Refuse anything but an ``nn.Module`` whose every submodule is in eval mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise TypeError(
            "model was compiled with torch.compile, which the soft gates do not support (the compiled "
            "graph hides the ReLU and max-pool calls, or recompiles on every one); pass the "
            "original module instead: model._orig_mod"
        )
    quantized = next((m for m in model.modules() if ".quantized" in type(m).__module__), None)
    if quantized is not None:
        raise TypeError(
            f"model is quantized ({type(quantized).__module__}.{type(quantized).__name__}): quantized "
            "operators have no gradient with respect to their input; explain the floating-point model "
            "it was made from"
        )
    # only modules whose behaviour depends on the flag count (a DataParallel wrapper's own
    # flag, or a container's, changes nothing)
    training = [
        name or "<model>" for name, m in model.named_modules() if m.training and isinstance(m, (_NormBase, _DropoutNd))
    ]
    if training:
        raise ValueError(
            f"model is in training mode ({len(training)} module(s), e.g. {training[0]!r}); "
            "call model.eval() first: in training mode BatchNorm uses batch statistics "
            "(so a sample's explanation depends on its batch) and updates its running "
            "statistics, and dropout is random"
        )


def check_in_range(inputs: Tensor, clip: tuple[float, float] | None) -> None:
    """The ascent clamps every step to ``clip``: an input outside it would be moved by the
    clamp alone, silently. Refuse it, saying what the library expects."""
    if clip is None:
        return
    lo, hi = float(inputs.detach().min()), float(inputs.detach().max())
    slack = 1e-4 * (clip[1] - clip[0])
    if lo < clip[0] - slack or hi > clip[1] + slack:
        raise ValueError(
            f"inputs range over [{lo:.3g}, {hi:.3g}], outside clip={tuple(clip)}: the ascent would clamp them "
            "before any gradient step. The library expects images in [-1, 1] (2 * pixel - 1, see "
            "docs/method.md, 'Input space'; load_model wraps each model to take them); for inputs "
            "in another space pass clip=(low, high) of that space, or clip=None to switch clamping off"
        )


def check_inputs(inputs: Tensor) -> None:
    """Refuse anything but a finite floating-point tensor with a batch dimension."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got dtype {inputs.dtype}")
    if inputs.dim() < 2:
        raise ValueError(
            f"inputs must have a batch dimension, got shape {tuple(inputs.shape)}; add a batch dimension: x[None]"
        )
    if inputs.shape[0] == 0:
        raise ValueError(f"inputs hold no sample (shape {tuple(inputs.shape)}); give at least one")
    if inputs.device.type == "meta":
        raise ValueError("inputs are on the 'meta' device, which holds no values; give real tensors")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values; check the image loading")


def check_devices(model: nn.Module, inputs: Tensor) -> None:
    """The model's tensors must hold values (not ``meta``) and sit on the inputs' device."""
    first = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    if first is None:
        return
    if first.device.type == "meta":
        raise ValueError(
            "the model's parameters are on the 'meta' device, which holds no values (a model built "
            "empty, e.g. with device_map='meta' or init_empty_weights); load its weights first "
            "(model.to_empty(device='cpu') then load_state_dict(...), or from_pretrained without a meta device)"
        )
    if first.device != inputs.device:
        raise ValueError(
            f"the model is on {first.device} but the inputs are on {inputs.device}; move one of them: "
            f"x.to('{first.device}') or model.to('{inputs.device}')"
        )


def shape_hint(shape: tuple) -> str:
    """What to do with inputs of ``shape`` when an image model wants ``(N, C, H, W)``."""
    if len(shape) == 3:
        batched = (1, *shape)
        return (
            f"an image model takes (N, C, H, W): if this is one image, add a batch dimension: x[None] (shape {batched})"
        )
    if len(shape) > 4:
        extra = len(shape) - 4
        return f"an image model takes (N, C, H, W); merge or drop the extra dimensions of {shape}: x.flatten(0,{extra})"
    return f"an image model takes (N, C, H, W), a text model (N, L) token ids or (N, L, D) embeddings; got {shape}"


def _class_hint(value: Any) -> ProblemTypeError:
    return ProblemTypeError(
        f"targets must be class indices, got the string {value!r}",
        fixes={
            "python": "look a name up with load_model(...).classes.index(name) (e.g. classes.index('tabby') == 281)",
            "cli": "give a class name or id, e.g. --target tabby",
            "app": "choose a target class",
        },
    )


def as_target_tensor(targets: Targets, batch: int, device: torch.device) -> Tensor:
    """``targets`` as a 1-D long tensor with one entry per sample (an int is broadcast).
    Python ints, numpy integers and arrays, and integer tensors are accepted."""
    if isinstance(targets, (bool, np.bool_)):
        raise TypeError("targets must be an int, a sequence of ints or an integer tensor, got a bool")
    if isinstance(targets, str) or (isinstance(targets, (list, tuple)) and any(isinstance(t, str) for t in targets)):
        raise _class_hint(targets if isinstance(targets, str) else next(t for t in targets if isinstance(t, str)))
    if isinstance(targets, (set, frozenset, dict)) or (hasattr(targets, "keys") and not isinstance(targets, Tensor)):
        raise TypeError(
            f"targets must be an int, a list of ints or an integer tensor, got a {type(targets).__name__} "
            "(its order is not the samples'); give a list: one class per sample, in order"
        )
    if isinstance(targets, np.ndarray):
        if not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"targets must be integers (class indices), got a numpy array of {targets.dtype}")
        targets = torch.from_numpy(np.ascontiguousarray(targets)).long()
    if isinstance(targets, numbers.Integral) and not isinstance(targets, Tensor):
        targets = int(targets)
    if isinstance(targets, int):
        if not -(2**63) <= targets < 2**63:
            raise ValueError(f"target class {targets} is out of range: classes are ids 0..(classes - 1)")
        t = torch.full((batch,), targets, dtype=torch.long)
    elif isinstance(targets, Tensor):
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"targets must be an integer tensor, got dtype {targets.dtype}")
        if targets.dim() > 1:
            raise ValueError(f"targets must be 1-D (one class per sample), got shape {tuple(targets.shape)}")
        t = targets.reshape(-1).to(torch.long)
        if targets.dim() == 0:
            t = t.expand(batch)
    else:
        try:
            items = list(targets)
        except TypeError:
            raise TypeError(
                f"targets must be an int, a sequence of ints or an integer tensor, got {type(targets).__name__}"
            ) from None
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_)) for i in items):
            raise TypeError(f"targets must contain ints (class indices), got {items!r}")
        too_big = [int(i) for i in items if not -(2**63) <= int(i) < 2**63]
        if too_big:
            raise ValueError(f"target class {too_big[0]} is out of range: classes are ids 0..(classes - 1)")
        t = torch.tensor([int(i) for i in items], dtype=torch.long)
    if t.numel() != batch:
        raise ValueError(
            f"got {t.numel()} targets for a batch of {batch} inputs; give one target per "
            "sample (or a single int for all)"
        )
    return t.to(device)


def check_logits(logits: Tensor) -> None:
    """Logits a gradient can be taken of: on the autograd graph, and finite."""
    if not logits.requires_grad:
        raise ValueError(
            "the model's logits do not depend on its input through autograd (does its forward run "
            "under torch.no_grad(), detach, or leave torch, e.g. through numpy?); pullbacks needs "
            "the autograd graph from input to logits"
        )
    bad = ~torch.isfinite(logits.detach()).all(dim=-1) if logits.dim() == 2 else ~torch.isfinite(logits.detach())
    if bad.any():
        rows = torch.nonzero(bad.reshape(-1)).flatten().tolist()
        raise ValueError(
            f"the model's logits are not finite (NaN or inf) for sample(s) {rows[:5]}: check its "
            "weights (a NaN parameter?) and the inputs; a model run in float16 may overflow: try "
            "float32"
        )


def check_gradient(grad: Tensor, soft: bool) -> None:
    """A finite pullback (or gradient): else a ValueError with the likely fix."""
    if torch.isfinite(grad).all():
        return
    small = "a temperature too small for the values its gate divides overflows: raise "
    fixes = (
        {
            "python": small + "temperature / pool_temperature (or temperatures={...}), or run the model in float64",
            "cli": small + "--temperature / --pool-temperature (or --temperatures FAMILY=T)",
            "app": small + "the temperatures",
        }
        if soft
        else {"python": "check the model in float32 or float64"}
    )
    raise ProblemValueError(
        f"the {'pullback' if soft else 'gradient'} came out NaN or infinite in "
        f"{int((~torch.isfinite(grad)).sum())} of {grad.numel()} entries although the logits "
        "are finite",
        fixes=fixes,
    )


def check_target_range(targets: Tensor, logits: Tensor) -> None:
    """Every target must index a column of the ``(batch, classes)`` logits."""
    if logits.dim() != 2:
        raise ValueError(f"model must return logits of shape (batch, classes), got {tuple(logits.shape)}")
    if logits.shape[0] != targets.numel():
        raise ValueError(
            f"the model returned {logits.shape[0]} rows of logits for {targets.numel()} inputs; "
            "it must return one row per input (batch, classes)"
        )
    classes = logits.shape[1]
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise ValueError(
            f"target class {int(bad[0])} is out of range for a model with {classes} classes (valid: 0..{classes - 1})"
        )
