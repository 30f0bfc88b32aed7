"""Input validation shared by the public functions: clear errors, nothing changed."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn

Targets = Union[int, Sequence[int], Tensor]


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
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"model is in training mode ({len(training)} module(s), e.g. {training[0]!r}); "
            "call model.eval() first: in training mode BatchNorm uses batch statistics "
            "(so a sample's explanation depends on its batch) and updates its running "
            "statistics, and dropout is random"
        )


def check_inputs(inputs: Tensor) -> None:
    """Refuse anything but a finite floating-point tensor with a batch dimension."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got dtype {inputs.dtype}")
    if inputs.dim() < 2:
        raise ValueError(
            f"inputs must have a batch dimension, got shape {tuple(inputs.shape)}; "
            "use inputs.unsqueeze(0) for a single sample"
        )
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values; check the image loading")


def as_target_tensor(targets: Targets, batch: int, device: torch.device) -> Tensor:
    """``targets`` as a 1-D long tensor with one entry per sample (an int is broadcast)."""
    if isinstance(targets, bool):
        raise TypeError("targets must be an int, a sequence of ints or an integer tensor, got a bool")
    if isinstance(targets, int):
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
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise TypeError(f"targets must contain ints (class indices), got {items!r}")
        t = torch.tensor(items, dtype=torch.long)
    if t.numel() != batch:
        raise ValueError(
            f"got {t.numel()} targets for a batch of {batch} inputs; give one target per "
            "sample (or a single int for all)"
        )
    return t.to(device)


def check_target_range(targets: Tensor, logits: Tensor) -> None:
    """Every target must index a column of the ``(batch, classes)`` logits."""
    if logits.dim() != 2:
        raise ValueError(f"model must return logits of shape (batch, classes), got {tuple(logits.shape)}")
    classes = logits.shape[1]
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise ValueError(
            f"target class {int(bad[0])} is out of range for a model with {classes} classes "
            f"(valid: 0..{classes - 1})"
        )
