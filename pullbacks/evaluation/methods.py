"""The attribution methods the evaluation compares, and the settings that fix the numbers."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..core.ascent import gradient_ascent
from ..core.checks import as_target_tensor, check_inputs, check_model
from ..core.options import AscentOptions
from ..core.pullback import excitation_pullback


@dataclass(frozen=True)
class Settings:
    """Everything that fixes the numbers. Defaults fit 15 minutes on 2 CPU cores for
    EfficientNet-Lite0 on the 4 built-in photos. Perturbation values are in the models'
    ``[-1, 1]`` input space (``baseline=0.0`` is mid-grey)."""

    ascent: AscentOptions = AscentOptions()  # the pullback's gates and both ascents (method is set per method)
    ig_steps: int = 32  # Integrated Gradients, Gauss-Legendre points, from `baseline`
    smoothgrad_samples: int = 50  # also SmoothPullback's (the follow-up's)
    smoothgrad_sigma: float = 0.15  # noise std in the [-1, 1] space: the follow-up's (SmoothGrad, SmoothPullback, Shap)
    shap_samples: int = 16  # GradientShap / PullbackShap: noisy points between the baseline and the input
    baseline: float = 0.0  # IG baseline and the value perturbed patches take
    blocks: int = 5  # randomisation: layer blocks re-initialised in cascade, top first
    patch: int = 56  # faithfulness correlation, region perturbation: a 4×4 grid of patches on 224×224
    infidelity_patches: tuple[int, ...] = (112, 56)  # infidelity: every patch of each size
    infidelity_draws: int = 5  # infidelity: draws of the uniform baseline over every patch
    infidelity_cumulative: bool = True  # earlier patches of a draw stay replaced (the follow-up's loop); False: ours, one at a time
    fe_features: int = 3136  # faithfulness estimate / monotonicity: entries per chunk (the follow-up's)
    mc_samples: int = 10  # monotonicity correlation: uniform-baseline draws per chunk
    mc_softmax: bool = True  # monotonicity correlation on probabilities (Quantus' default, the follow-up's); False: logits
    ms_samples: int = 10  # max-sensitivity: noise draws
    ms_radius: float = 0.02  # max-sensitivity: noise amplitude in [-1, 1] units
    batch_size: int = 16  # images per forward/backward pass (forward-only passes take 4 × batch_size)
    seed: int = 0


@dataclass(frozen=True)
class Method:
    label: str
    description: str
    backward_passes: Callable[[Settings], int]  # per image, for the progress bar


METHODS: dict[str, Method] = {
    "pullback": Method("Excitation pullback", "one backward pass with soft gates", lambda s: 1),
    "pullback_ascent": Method("Pullback ascent", "x_steps - x_0 along the pullback", lambda s: s.ascent.steps),
    "gradient": Method("Vanilla gradient", "Captum Saliency, signed", lambda s: 1),
    "gradient_ascent": Method("Gradient ascent", "x_steps - x_0 along the gradient", lambda s: s.ascent.steps),
    "input_x_gradient": Method("Input × Gradient", "Captum InputXGradient", lambda s: 1),
    "smoothgrad": Method("SmoothGrad", "Captum NoiseTunnel(Saliency), signed", lambda s: s.smoothgrad_samples),
    "integrated_gradients": Method("Integrated Gradients", "Captum IntegratedGradients", lambda s: s.ig_steps),
    "gradient_shap": Method("GradientShap", "Captum GradientShap from the baseline", lambda s: s.shap_samples),
    "integrated_pullbacks": Method("Integrated Pullbacks", "Captum IntegratedGradients of SoftGated(model)",
                                   lambda s: s.ig_steps),
    "smooth_pullback": Method("SmoothPullback", "Captum NoiseTunnel(Saliency) of SoftGated(model)",
                              lambda s: s.smoothgrad_samples),
    "pullback_shap": Method("PullbackShap", "Captum GradientShap of SoftGated(model)", lambda s: s.shap_samples),
    "guided_gradcam": Method("Guided Grad-CAM", "Captum GuidedGradCam at the last Conv2d (its guided "
                             "backprop rewrites nn.ReLU modules only)", lambda s: 2),
    "guided_pullback_cam": Method("Guided Pullback-CAM",
                                  "the pullback × Grad-CAM of SoftGated(model) at the last Conv2d; ours", lambda s: 2),
    "guided_backprop": Method("Guided Backprop", "Captum GuidedBackprop (rewrites nn.ReLU modules only)",
                              lambda s: 1),
    "gradcam": Method("Grad-CAM", "Captum LayerGradCam at the last Conv2d, non-negative, upsampled (nearest)",
                      lambda s: 1),
    # baselines that keep everyone honest: none of them looks at the model
    "edge": Method("Edge detector", "the Sobel magnitude of each input channel", lambda s: 0),
    "random": Method("Random map", "uniform noise in [0, 1), seeded by the input", lambda s: 0),
    "centre": Method("Centre prior", "a centred Gaussian (σ a quarter of the side) that ignores the image",
                     lambda s: 0),
}
DEFAULT_METHODS = ("pullback", "pullback_ascent", "gradient", "gradient_ascent", "input_x_gradient", "smoothgrad",
                   "integrated_gradients")  # "all": every one of METHODS (the composed ones cost 16-32 passes each)
NOISY = ("smoothgrad", "smooth_pullback", "gradient_shap", "pullback_shap", "random")  # drawn from noise_seed
BASELINE_MAPS = ("edge", "random", "centre")  # maps that ignore the model
PAIRS = (("pullback", "gradient"), ("pullback_ascent", "gradient_ascent"),
         ("integrated_pullbacks", "integrated_gradients"), ("smooth_pullback", "smoothgrad"),
         ("pullback_shap", "gradient_shap"), ("guided_pullback_cam", "guided_gradcam"))


def _chunks(n: int, size: int):
    for i in range(0, n, max(1, size)):
        yield slice(i, min(n, i + max(1, size)))


def attribute(model: nn.Module, inputs: Tensor, targets, method: str, settings: Settings = Settings()) -> Tensor:
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
    noisy = method in NOISY
    size = 1 if noisy else settings.batch_size
    for sl in _chunks(inputs.shape[0], size):
        seed = noise_seed(settings.seed, inputs[sl], t[sl]) if noisy else settings.seed
        with torch.enable_grad():
            out.append(_attribute_chunk(model, inputs[sl].detach(), t[sl], method, settings, seed).detach())
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
        prior = torch.exp(-(rows[:, None] ** 2 + cols[None] ** 2) / (2 * sigma ** 2))
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


def _attribute_chunk(model: nn.Module, x: Tensor, y: Tensor, method: str, s: Settings, seed: int) -> Tensor:
    if method == "pullback":
        return excitation_pullback(model, x, y, s.ascent.gates)
    if method in ("pullback_ascent", "gradient_ascent"):
        kind = "pullback" if method == "pullback_ascent" else "gradient"
        return gradient_ascent(model, x, y, s.ascent.replace(method=kind)) - x
    if method in BASELINE_MAPS:
        return baseline_map(x, method, seed)
    from .captum import baseline  # Captum is needed for the baselines only

    return baseline(model, x, y, method, s, seed)


def unknown_name(what: str, name: str, allowed) -> str:
    """The message for a name that is not in ``allowed``, with the closest ones."""
    close = difflib.get_close_matches(str(name), list(allowed), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; choose from {', '.join(allowed)}"


def check_names(names: Sequence[str] | None, allowed: dict, what: str, default: Sequence[str] | None = None
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
