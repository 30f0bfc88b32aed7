"""Our own metric (faithfulness correlation over patches), the statistics the report uses
(Pearson, Spearman, mean and standard error, bootstrap intervals) and the helpers every
metric shares (heat maps, patch grids, seeded generators, the model's device).

The metrics of ``pullbacks evaluate`` each take a model, a batch of inputs ``(N, C, H, W)``,
one target class per input and attribution maps of the inputs' shape, and return one score
per input; they are run through the registry in :mod:`.evaluate`. Where a well-tested
library implements a metric the way we need it, we call the library:

====================================  ===========================================  =========
metric                                 implementation                               better
====================================  ===========================================  =========
model-parameter randomisation          ours (:mod:`.randomisation`), cascading  lower
                                       over a few layer blocks, Spearman of |a|
random-logit check                     Quantus ``RandomLogit`` (:mod:`.quantus`)    lower
faithfulness correlation, patches      ours (:func:`faithfulness_correlation`)      higher
infidelity, patch removal              Captum's infidelity (:mod:`.captum`)         lower
region perturbation (MoRF deletion)    Quantus (:mod:`.quantus`), summarised        higher
                                       as the area over the curve (AOPC)
====================================  ===========================================  =========

Why two are ours: Quantus's ``MPRT`` re-initialises every module that has
``reset_parameters`` one at a time (about a hundred for EfficientNet-Lite0, each needing
every method's attributions again), far beyond a 15-minute CPU budget, so we cascade over
a handful of contiguous blocks instead; and Quantus's ``FaithfulnessCorrelation`` draws
random single pixel-channel values, not patches, which on a 224×224 image moves the logit
by almost nothing. Both of ours are tested against hand-computed cases.

Perturbations replace pixels by a baseline *in the model's input space*: the models here
take ``[-1, 1]``, where ``0.0`` is mid-grey (the default).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["heatmap", "spearman", "pearson", "patch_masks", "faithfulness_correlation", "mean_se", "bootstrap_ci"]


# --------------------------------------------------------------------------- helpers


def device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def forked_rng(seed: int, device: torch.device):
    """Seed torch's RNG (CPU, and the model's CUDA device) and numpy's global one (Captum's
    GradientShap draws from it) inside, restore both after."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), numpy_rng_preserved():
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        yield


@contextmanager
def numpy_rng_preserved():
    """Quantus seeds numpy's global RNG; give the caller theirs back."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def _logits(model: nn.Module, x: Tensor, targets: Tensor, batch: int) -> Tensor:
    """``model(x)[i, targets[i]]`` without gradients, in chunks of ``batch``."""
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out.append(model(x[i:i + batch]).gather(1, targets[i:i + batch, None])[:, 0])
    return torch.cat(out)


def heatmap(attributions: Tensor | np.ndarray, reduce: str = "abs") -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, H, W)``: ``"abs"`` sums ``|a|`` over channels, ``"sum"`` sums ``a``."""
    a = attributions.detach().cpu().numpy() if isinstance(attributions, Tensor) else np.asarray(attributions)
    a = a.astype(np.float64)
    if reduce == "abs":
        return np.abs(a).sum(axis=1)
    if reduce == "sum":
        return a.sum(axis=1)
    raise ValueError(f"reduce must be 'abs' or 'sum', got {reduce!r}")


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of two ``(N, K)`` arrays; NaN where a row is constant."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / den
    return np.where(den > 0, r, np.nan)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rank correlation (ties get their average rank)."""
    from scipy.stats import rankdata

    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    return pearson(rankdata(a, axis=1), rankdata(b, axis=1))


# --------------------------------------------------------------------------- patches


def patch_grid(h: int, w: int, patch: int) -> tuple[int, int]:
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(f"patch must be an integer >= 1, got {patch!r}")
    return math.ceil(h / patch), math.ceil(w / patch)


def upsample(masks: Tensor, patch: int, h: int, w: int) -> Tensor:
    """``(..., gh, gw)`` patch masks → ``(..., 1, h, w)`` pixel masks (edge patches cropped)."""
    m = masks.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)[..., :h, :w]
    return m.unsqueeze(-3)


def patch_sums(a: Tensor, patch: int) -> Tensor:
    """``(N, C, H, W)`` → ``(N, gh * gw)``: the attribution summed over each patch and channel."""
    n, _, h, w = a.shape
    gh, gw = patch_grid(h, w, patch)
    padded = torch.nn.functional.pad(a.sum(1, dtype=torch.float64), (0, gw * patch - w, 0, gh * patch - h))
    return padded.view(n, gh, patch, gw, patch).sum(dim=(2, 4)).reshape(n, gh * gw)


def patch_masks(n: int, runs: int, n_patches: int, subset: int, seed: int = 0) -> np.ndarray:
    """``(n, runs, n_patches)`` boolean masks, each with exactly ``subset`` patches set."""
    if not 1 <= subset <= n_patches:
        raise ValueError(f"subset must be between 1 and the number of patches ({n_patches}), got {subset}")
    rng = np.random.default_rng(seed)
    keys = rng.random((n, runs, n_patches))
    order = np.argsort(keys, axis=-1)[..., :subset]
    masks = np.zeros((n, runs, n_patches), dtype=bool)
    np.put_along_axis(masks, order, True, axis=-1)
    return masks


def faithfulness_correlation(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    *,
    patch: int = 56,
    subset: int = 4,
    runs: int = 128,
    baseline: float = 0.0,
    seed: int = 0,
    batch: int = 16,
    masks: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Faithfulness Correlation (Bhatt et al. 2020) over square patches.

    For each input, ``runs`` times: replace a random set of ``subset`` patches of
    ``patch × patch`` pixels by ``baseline``, and record the drop of the target logit
    ``f(x) - f(x')`` and, for each method, the sum of its (signed) attribution over those
    patches. The score is the Pearson correlation of the two over the runs (higher: the
    attribution predicts better which regions matter). Attributions are ``(N, C, H, W)``
    (summed over channels here) or already reduced maps ``(N, 1, H, W)``. The random sets are the same for
    every method, so the model is evaluated once per run, whatever the number of methods.
    ``masks`` (``(N, runs, n_patches)`` booleans) overrides the random sets.
    """
    n, _, h, w = inputs.shape
    gh, gw = patch_grid(h, w, patch)
    if masks is None:
        masks = patch_masks(n, runs, gh * gw, subset, seed)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] != n or masks.shape[2] != gh * gw:
        raise ValueError(f"masks must have shape ({n}, runs, {gh * gw}), got {masks.shape}")
    r = masks.shape[1]
    m = torch.as_tensor(masks, device=inputs.device).view(n, r, gh, gw)
    grey = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    base = _logits(model, inputs, targets, batch)
    drops = np.empty((n, r))
    for i in range(n):  # one input at a time: r perturbed copies of it
        perturbed = torch.where(upsample(m[i], patch, h, w), grey, inputs[i])
        after = _logits(model, perturbed, targets[i].repeat(r), batch)
        drops[i] = (base[i] - after).double().cpu().numpy()
    scores = {}
    for method, a in attributions.items():
        sums = patch_sums(a, patch).cpu().numpy()  # (n, patches)
        s = np.einsum("nrp,np->nr", masks.astype(np.float64), sums)
        scores[method] = pearson(s, drops)
    return scores


# --------------------------------------------------------------------------- statistics


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``) of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, level: float = 0.95, n_boot: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite ``values``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)
