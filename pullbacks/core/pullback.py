"""``excitation_pullback()``: the input gradient of the target logits with soft gates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .checks import (
    Targets,
    as_target_tensor,
    check_devices,
    check_gradient,
    check_inputs,
    check_logits,
    check_model,
    check_target_range,
    shape_hint,
)
from .mode import SoftGateMode
from .options import GateOptions, build
from .policy import CoverageCheck
from .randomness import NoRandomMode


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: a tensor, a mapping with ``"logits"``, an object with
    a ``.logits`` tensor (Hugging Face outputs), or a tuple/list whose first item is one."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(
        f"the model returned a {type(output).__name__}; pullbacks needs the logits as a (batch, classes) "
        "tensor, a dict with a 'logits' entry, an object with a .logits tensor, or a tuple whose first "
        "item is the logits; otherwise wrap the model: nn.Sequential(model, PickLogits())"
    )


def _dtype_of(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)``'s logits; a 3-D input that the model rejects gets the batch-dimension
    hint, one of another dtype than the model's parameters the conversion to make."""
    try:
        return logits_of(model(x))
    except (RuntimeError, ValueError) as e:
        dtype = _dtype_of(model)
        if dtype is not None and dtype != x.dtype:
            raise TypeError(
                f"inputs are {x.dtype} but the model's parameters are {dtype} "
                f"({str(e).splitlines()[0]}); convert one of them: x.to({dtype}) or "
                f"model.to({x.dtype})"
            ) from e
        if x.dim() == 3 or x.dim() != 4 and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
            raise ValueError(
                f"the model failed on inputs of shape {tuple(x.shape)} ({str(e).splitlines()[0]}); "
                f"{shape_hint(tuple(x.shape))}"
            ) from e
        raise


def target_gradient(
    model: nn.Module, inputs: Tensor, targets: Tensor, gates: GateOptions | None, check: CoverageCheck | None = None
) -> Tensor:
    """``d/dx sum_i logits[i, targets[i]]`` at ``inputs``, with the soft gates of ``gates``
    (or the vanilla gradient when ``gates`` is None). Inputs are assumed validated.
    ``check``: the coverage policy to apply after the forward pass (default: a fresh one;
    an ascent passes one for all its steps, so that it warns once).

    Uses ``torch.autograd.grad`` so no parameter's ``.grad`` is ever written.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "pullbacks cannot run under torch.inference_mode(): it records no autograd graph, so there is "
            "no gradient to modify; call it outside the `with torch.inference_mode():` block "
            "(torch.no_grad() around it is fine)"
        )
    check_devices(model, inputs)
    with torch.enable_grad():  # also when called under no_grad (e.g. by Captum's NoiseTunnel)
        # a tensor made under inference mode cannot require a gradient: use a normal copy
        x = (inputs.clone() if inputs.is_inference() else inputs.detach()).requires_grad_(True)
        if gates is None:
            with NoRandomMode():
                logits = _forward(model, x)
        else:
            mode = SoftGateMode(gates, refuse_random=True, model=model)
            mode.wrt = (x,)  # the input gradient alone: parameters need none
            with mode:
                logits = _forward(model, x)
        if logits.dim() == 2 and logits.shape[0] != targets.numel() and x.dim() != 4:
            raise ValueError(
                f"the model returned {logits.shape[0]} rows of logits for {targets.numel()} inputs of shape "
                f"{tuple(x.shape)}; {shape_hint(tuple(x.shape))}"
            )
        check_target_range(targets, logits)
        check_logits(logits)
        if gates is not None:
            (check or CoverageCheck(gates.strict, gates.rules))(
                mode.coverage, type(model).__name__, logits, mode.gradless, model, mode.structure, mode.wrt
            )
        loss = logits.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        if grad is None:
            raise ValueError(
                "the model's logits do not depend on its input through autograd (an operator without "
                "a gradient on the way, or the input not used?); pullbacks needs the autograd graph from "
                "input to logits"
            )
    check_gradient(grad, gates is not None)
    return grad


def excitation_pullback(
    model: nn.Module,
    inputs: Tensor,
    targets: Targets,
    options: GateOptions | None = None,
    **overrides: Any,
) -> Tensor:
    """The excitation pullback of the target logits with respect to ``inputs``.

    ``d/dx sum_i logits[i, targets[i]]`` with every ReLU derivative ``1[z > 0]`` replaced by
    ``s(z / T)``, max pooling back-propagated through a soft max pool, and SiLU/GELU/
    Hardswish/Mish, norms and attention through their soft rules (docs/method.md); the
    forward pass is unchanged. Returns a tensor of the shape of ``inputs``.

    ``targets``: an int (same class for all), a sequence of ints or a 1-D integer tensor
    with one class per sample. Options: a :class:`GateOptions` and/or its fields as
    keywords (``temperature=0.3``, ``pool_temperature``, ``temperatures={"gelu": 1.0}``,
    ``rules=[GateRule(...)]``, ``gate``, ``pool``, ``strict``, ``replay``). When nonlinear calls no rule covers were
    met (a squeeze-excitation sigmoid, a hand-written softmax), a
    :class:`PartialPullbackWarning` says so; ``strict=True`` raises instead.
    ``model`` must be in eval mode; it is never modified.
    """
    gates = build(GateOptions, options, overrides)
    check_model(model)
    check_inputs(inputs)
    t = as_target_tensor(targets, inputs.shape[0], inputs.device)
    return target_gradient(model, inputs, t, gates)


class SoftGated(nn.Module):
    """``model`` with every forward pass run under soft gates, and the coverage checked
    after each one (nothing gated: an error; partial: one warning for the wrapper's
    lifetime, or an error with ``strict=True``).

    Any gradient-based method applied to it becomes its pullback version: Captum's
    ``IntegratedGradients(SoftGated(model))`` is Integrated Pullbacks,
    ``NoiseTunnel(Saliency(SoftGated(model)))`` SmoothPullback,
    ``GradientShap(SoftGated(model))`` PullbackShap. ``model`` itself is not changed.
    Options: a :class:`GateOptions` and/or its fields as keywords.
    """

    def __init__(self, model: nn.Module, options: GateOptions | None = None, **overrides: Any) -> None:
        super().__init__()
        check_model(model)
        self.model = model
        self.options = build(GateOptions, options, overrides)
        self.check = CoverageCheck(self.options.strict, self.options.rules)

    def forward(self, x: Tensor) -> Tensor:
        mode = SoftGateMode(self.options, refuse_random=True, model=self.model)
        with mode:
            logits = _forward(self.model, x)
        if torch.is_grad_enabled():
            self.check(mode.coverage, type(self.model).__name__, logits, mode.gradless, self.model, mode.structure)
        return logits
