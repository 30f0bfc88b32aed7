"""The Captum side: the gradient baselines and our methods as Captum attributions.

ExcitationPullback(model, temperature=1.0).attribute(x, target=y)
Ascent(model, method="pullback", steps=5).attribute(x, target=y)    # x_steps - x_0
captum.attr.NoiseTunnel(ExcitationPullback(model))                   # a SmoothGrad'ed pullback
captum.attr.IntegratedGradients(pullbacks.SoftGated(model))           # Integrated Pullbacks
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

try:
    from captum.attr import (
        GradientAttribution,
        GradientShap,
        GuidedBackprop,
        GuidedGradCam,
        InputXGradient,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        NoiseTunnel,
        Saliency,
    )
    from captum.log import log_usage
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"{e}; the Captum adapters need Captum alone: pip install 'pullbacks[captum]' (the whole "
        "evaluation: 'pullbacks[evaluate]')"
    ) from e

from ..core.ascent import gradient_ascent
from ..core.checks import as_target_tensor
from ..core.options import AscentOptions, GateOptions, build
from ..core.pullback import SoftGated, excitation_pullback
from .metrics import forked_rng

if TYPE_CHECKING:
    from .settings import Settings


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM reads: the model's last ``nn.Conv2d`` (in module order)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            "guided_gradcam and guided_pullback_cam need a convolutional network: this model has no "
            "nn.Conv2d; leave those two out of the methods"
        )
    return convs[-1]


def guided_pullback_cam(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Guided Grad-CAM with the pullback in both places (ours): the excitation pullback times
    the non-negative Grad-CAM of :class:`SoftGated` ``model`` at :func:`cam_layer`, upsampled
    to the input (nearest, as Captum's ``GuidedGradCam``); gates ``s.ascent.gates``."""
    gates = s.ascent.gates
    soft = SoftGated(model, gates)
    cam = LayerGradCam(soft, cam_layer(model)).attribute(_leaf(x), target=y, relu_attributions=True)
    return excitation_pullback(model, x.detach(), y, gates) * LayerAttribution.interpolate(cam, x.shape[2:])


# Captum's methods, one function each, ``(model, x, y, settings, seed) -> attribution``; the
# registry (``methods.METHODS``) also runs them on ``SoftGated(model)``, where every gradient they
# take is a pullback. The noisy ones draw from torch's RNG seeded ``seed`` (the caller's restored).


def _leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True)  # a fresh leaf (Captum warns otherwise)


def saliency(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``Saliency``, signed: the vanilla gradient."""
    return Saliency(model).attribute(_leaf(x), target=y, abs=False)


def input_x_gradient(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``InputXGradient``."""
    return InputXGradient(model).attribute(_leaf(x), target=y)


def smoothgrad(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``NoiseTunnel(Saliency)``, signed: ``s.smoothgrad_samples`` draws of σ ``s.smoothgrad_sigma``."""
    with forked_rng(seed, x.device):  # reproducible; the caller's RNG is restored
        return NoiseTunnel(Saliency(model)).attribute(
            _leaf(x),
            nt_type="smoothgrad",
            nt_samples=s.smoothgrad_samples,
            stdevs=s.smoothgrad_sigma,
            nt_samples_batch_size=max(1, s.batch_size // x.shape[0]),
            target=y,
            abs=False,
        )


def integrated_gradients(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``IntegratedGradients`` from ``s.baseline``, ``s.ig_steps`` Gauss-Legendre points."""
    return IntegratedGradients(model).attribute(
        _leaf(x), baselines=s.baseline, target=y, n_steps=s.ig_steps, internal_batch_size=s.batch_size
    )


def gradient_shap(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``GradientShap`` from the constant baseline ``s.baseline``."""
    with forked_rng(seed, x.device):
        return GradientShap(model).attribute(
            _leaf(x),
            baselines=torch.full_like(x[:1], s.baseline),
            n_samples=s.shap_samples,
            stdevs=s.smoothgrad_sigma,
            target=y,
        )


def guided_gradcam(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``GuidedGradCam`` at :func:`cam_layer` (its guided backprop rewrites nn.ReLU modules only)."""
    with warnings.catch_warnings():  # Captum announces its temporary hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        return GuidedGradCam(model, cam_layer(model)).attribute(_leaf(x), target=y)


def guided_backprop(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``GuidedBackprop`` (rewrites nn.ReLU modules only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        return GuidedBackprop(model).attribute(_leaf(x), target=y)


def gradcam(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int = 0) -> Tensor:
    """Captum ``LayerGradCam`` at :func:`cam_layer`: non-negative, upsampled (nearest) to the input,
    the same in every channel."""
    cam = LayerGradCam(model, cam_layer(model)).attribute(_leaf(x), target=y, relu_attributions=True)
    return LayerAttribution.interpolate(cam, x.shape[2:]).expand_as(x).clone()


def _captum_target(model: nn.Module, inputs: Tensor, target: Any) -> Tensor:
    """Captum's ``target`` (int, list of ints, tensor, or None for the predicted class)."""
    if target is None:
        with torch.no_grad():
            return model(inputs).argmax(1)
    if isinstance(target, tuple) or (isinstance(target, list) and target and isinstance(target[0], tuple)):
        raise TypeError("pullback adapters explain classifier logits: give one int class per input, not tuples")
    return as_target_tensor(target, inputs.shape[0], inputs.device)


def _no_extra_args(additional_forward_args: Any) -> None:
    if additional_forward_args is not None:
        raise TypeError("additional_forward_args are not supported: the model must take the inputs alone")


class ExcitationPullback(GradientAttribution):
    """Captum-style excitation pullback: ``ExcitationPullback(model, temperature=...).attribute(x, target=y)``.

    Returns ``d/dx sum_i logits[i, target_i]`` with soft backward gates, a tensor shaped like
    ``inputs``. ``target=None`` explains the predicted class. Works inside ``NoiseTunnel``.
    Options: a :class:`GateOptions` and/or its fields as keywords.
    """

    def __init__(self, model: nn.Module, options: GateOptions | None = None, **overrides: Any) -> None:
        super().__init__(model)
        self.options = build(GateOptions, options, overrides)

    @log_usage()  # NoiseTunnel calls the undecorated method through __wrapped__
    def attribute(self, inputs: Tensor, target: Any = None, additional_forward_args: Any = None) -> Tensor:
        _no_extra_args(additional_forward_args)
        t = _captum_target(self.forward_func, inputs, target)
        return excitation_pullback(self.forward_func, inputs, t, self.options)


class Ascent(GradientAttribution):
    """Captum-style ascent attribution: ``x_steps - x_0`` after the projected ascent along
    the pullback (``method="pullback"``, the default) or the vanilla gradient
    (``method="gradient"``), as the paper shows it. Options: an :class:`AscentOptions`
    and/or its fields as keywords."""

    def __init__(self, model: nn.Module, options: AscentOptions | None = None, **overrides: Any) -> None:
        super().__init__(model)
        self.options = build(AscentOptions, options, overrides)

    @log_usage()  # NoiseTunnel calls the undecorated method through __wrapped__
    def attribute(self, inputs: Tensor, target: Any = None, additional_forward_args: Any = None) -> Tensor:
        _no_extra_args(additional_forward_args)
        t = _captum_target(self.forward_func, inputs, target)
        x0 = inputs.detach()
        return gradient_ascent(self.forward_func, x0, t, self.options) - x0
