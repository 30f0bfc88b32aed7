"""The attribution methods the evaluation compares, and the settings that fix the numbers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.ascent import gradient_ascent
from ..core.checks import as_target_tensor, check_inputs, check_model
from ..core.pullback import SoftGated, excitation_pullback
from ..core.validators import unknown_name
from .settings import Settings

Attribute = Callable[[nn.Module, Tensor, Tensor, Settings, int], Tensor]  # (model, x, targets, settings, seed)


@dataclass(frozen=True)
class Method:
    """One attribution method: its report ``label`` and ``description``, its ``backward_passes``
    per image (the progress bar), ``attribute`` (how it explains a batch), whether it is ``noisy``
    (draws noise, seeded per input by :func:`noise_seed`), the method it ``pairs_with`` in the
    report's paired differences, and whether it ``ignores_model`` (a baseline map)."""

    label: str
    description: str
    backward_passes: Callable[[Settings], int]
    attribute: Attribute
    noisy: bool = False
    pairs_with: str | None = None
    ignores_model: bool = False


def _pullback(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int) -> Tensor:
    return excitation_pullback(model, x, y, s.ascent.gates)


def _ascent(kind: str) -> Attribute:
    def run(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int) -> Tensor:
        return gradient_ascent(model, x, y, s.ascent.replace(method=kind)) - x

    return run


def _captum(name: str, soft: bool = False) -> Attribute:
    """Captum's method ``name`` (a function of ``captum.py``), on ``SoftGated(model)`` when ``soft``:
    Captum is imported when the method runs (it is needed for these alone)."""

    def run(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int) -> Tensor:
        from . import captum

        return getattr(captum, name)(SoftGated(model, s.ascent.gates) if soft else model, x, y, s, seed)

    return run


def _map(name: str) -> Attribute:
    def run(model: nn.Module, x: Tensor, y: Tensor, s: Settings, seed: int) -> Tensor:
        return baseline_map(x, name, seed)

    return run


def _steps(s: Settings) -> int:
    return s.ascent.steps


METHODS: dict[str, Method] = {
    "pullback": Method(
        "Excitation pullback", "one backward pass with soft gates", lambda s: 1, _pullback, pairs_with="gradient"
    ),
    "pullback_ascent": Method(
        "Pullback ascent", "x_steps - x_0 along the pullback", _steps, _ascent("pullback"), pairs_with="gradient_ascent"
    ),
    "gradient": Method("Vanilla gradient", "Captum Saliency, signed", lambda s: 1, _captum("saliency")),
    "gradient_ascent": Method("Gradient ascent", "x_steps - x_0 along the gradient", _steps, _ascent("gradient")),
    "input_x_gradient": Method("Input × Gradient", "Captum InputXGradient", lambda s: 1, _captum("input_x_gradient")),
    "smoothgrad": Method(
        "SmoothGrad",
        "Captum NoiseTunnel(Saliency), signed",
        lambda s: s.smoothgrad_samples,
        _captum("smoothgrad"),
        noisy=True,
    ),
    "integrated_gradients": Method(
        "Integrated Gradients", "Captum IntegratedGradients", lambda s: s.ig_steps, _captum("integrated_gradients")
    ),
    "gradient_shap": Method(
        "GradientShap",
        "Captum GradientShap from the baseline",
        lambda s: s.shap_samples,
        _captum("gradient_shap"),
        noisy=True,
    ),
    "integrated_pullbacks": Method(
        "Integrated Pullbacks",
        "Captum IntegratedGradients of SoftGated(model)",
        lambda s: s.ig_steps,
        _captum("integrated_gradients", soft=True),
        pairs_with="integrated_gradients",
    ),
    "smooth_pullback": Method(
        "SmoothPullback",
        "Captum NoiseTunnel(Saliency) of SoftGated(model)",
        lambda s: s.smoothgrad_samples,
        _captum("smoothgrad", soft=True),
        noisy=True,
        pairs_with="smoothgrad",
    ),
    "pullback_shap": Method(
        "PullbackShap",
        "Captum GradientShap of SoftGated(model)",
        lambda s: s.shap_samples,
        _captum("gradient_shap", soft=True),
        noisy=True,
        pairs_with="gradient_shap",
    ),
    "guided_gradcam": Method(
        "Guided Grad-CAM",
        "Captum GuidedGradCam at the last Conv2d (its guided backprop rewrites nn.ReLU modules only)",
        lambda s: 2,
        _captum("guided_gradcam"),
    ),
    "guided_pullback_cam": Method(
        "Guided Pullback-CAM",
        "the pullback × Grad-CAM of SoftGated(model) at the last Conv2d; ours",
        lambda s: 2,
        _captum("guided_pullback_cam"),
        pairs_with="guided_gradcam",
    ),
    "guided_backprop": Method(
        "Guided Backprop",
        "Captum GuidedBackprop (rewrites nn.ReLU modules only)",
        lambda s: 1,
        _captum("guided_backprop"),
    ),
    "gradcam": Method(
        "Grad-CAM",
        "Captum LayerGradCam at the last Conv2d, non-negative, upsampled (nearest)",
        lambda s: 1,
        _captum("gradcam"),
    ),
    # baselines that keep everyone honest: none of them looks at the model
    "edge": Method(
        "Edge detector", "the Sobel magnitude of each input channel", lambda s: 0, _map("edge"), ignores_model=True
    ),
    "random": Method(
        "Random map",
        "uniform noise in [0, 1), seeded by the input",
        lambda s: 0,
        _map("random"),
        noisy=True,
        ignores_model=True,
    ),
    "centre": Method(
        "Centre prior",
        "a centred Gaussian (σ a quarter of the side) that ignores the image",
        lambda s: 0,
        _map("centre"),
        ignores_model=True,
    ),
}
DEFAULT_METHODS = (
    "pullback",
    "pullback_ascent",
    "gradient",
    "gradient_ascent",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
)  # "all": every one of METHODS (the composed ones cost 16-32 passes each)
BASELINE_MAPS = tuple(k for k, m in METHODS.items() if m.ignores_model)
PAIRS = tuple((k, m.pairs_with) for k, m in METHODS.items() if m.pairs_with)
assert all(b in METHODS for _, b in PAIRS), "a method pairs with a method of the registry"


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, max(1, size)):
        yield slice(i, min(n, i + max(1, size)))


def attribute(model: nn.Module, inputs: Tensor, targets: Any, method: str, settings: Settings = Settings()) -> Tensor:  # noqa: B008 - frozen
    """The attribution of ``method`` (a key of ``METHODS``): a tensor shaped like ``inputs``, signed.

    Computed in chunks of ``settings.batch_size`` inputs, with gradients enabled even when the
    caller runs under ``torch.no_grad()``.
    """
    if method not in METHODS:
        raise ValueError(unknown_name("method", method, METHODS))
    check_model(model)
    check_inputs(inputs)
    t = as_target_tensor(targets, inputs.shape[0], inputs.device)
    out = []
    # the noisy methods go one input at a time, their noise seeded by the input itself (see
    # noise_seed), so that results depend on neither the batch nor the order
    entry = METHODS[method]
    noisy = entry.noisy
    size = 1 if noisy else settings.batch_size
    for sl in _chunks(inputs.shape[0], size):
        seed = noise_seed(settings.seed, inputs[sl], t[sl]) if noisy else settings.seed
        with torch.enable_grad():
            out.append(entry.attribute(model, inputs[sl].detach(), t[sl], settings, seed).detach())
    return torch.cat(out)


def baseline_map(x: Tensor, method: str, seed: int = 0) -> Tensor:
    """A map that ignores the model: ``"edge"`` (per channel, ``sqrt(S_x² + S_y²)`` with the
    3×3 Sobel kernels, zero padding), ``"random"`` (uniform in [0, 1), from ``seed``) or
    ``"centre"`` (``exp(-r² / 2σ²)``, ``σ`` a quarter of the shorter side, every channel)."""
    import torch.nn.functional as F

    if method == "edge":
        k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
        kernels = torch.stack([k, k.t()])[:, None]  # (2, 1, 3, 3)
        grads = F.conv2d(x.reshape(-1, 1, *x.shape[-2:]), kernels, padding=1)
        return grads.pow(2).sum(1).sqrt().view_as(x)
    if method == "random":
        g = torch.Generator().manual_seed(int(seed))
        return torch.rand(x.shape, generator=g, dtype=x.dtype).to(x.device)
    if method == "centre":
        h, w = x.shape[-2:]
        rows = torch.arange(h, dtype=x.dtype, device=x.device) - (h - 1) / 2
        cols = torch.arange(w, dtype=x.dtype, device=x.device) - (w - 1) / 2
        sigma = min(h, w) / 4
        prior = torch.exp(-(rows[:, None] ** 2 + cols[None] ** 2) / (2 * sigma**2))
        return prior.expand_as(x).clone()
    raise ValueError(unknown_name("baseline map", method, BASELINE_MAPS))


def noise_seed(seed: int, x: Tensor, targets: Tensor) -> int:
    """The seed of a noisy method's draws for the inputs ``x`` and their ``targets``: from the
    run's ``seed``, the inputs' bytes and the targets, so that every other input (a noisy copy of
    max-sensitivity) and every other target (the random logit's class) gets fresh noise, and
    the same input and target the same noise in any batch, order or process."""
    h = hashlib.sha256(f"{int(seed)}:{targets.tolist()}:{x.dtype}:{tuple(x.shape)}".encode())
    h.update(x.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:4], "big") >> 1


def check_names(
    names: Sequence[str] | None, allowed: dict, what: str, default: Sequence[str] | None = None
) -> list[str]:
    """``names`` without repeats, each one of ``allowed`` (None: ``default``, or all of them;
    ``["all"]``: all of them)."""
    if names is None:
        return list(default if default is not None else allowed)
    if list(names) == ["all"]:
        return list(allowed)
    out = []
    for n in names:
        if n not in allowed:
            raise ValueError(unknown_name(what, n, allowed))
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError(f"no {what}s chosen")
    return out
