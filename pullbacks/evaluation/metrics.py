"""The statistics the report uses (Pearson, Spearman, mean and standard error, bootstrap
intervals) and the helpers every metric shares (heat maps, patch grids, seeded generators,
the model's device).

The metrics of ``pullbacks evaluate`` each take a model, a batch of inputs ``(N, C, H, W)``,
one target class per input and attribution maps of the inputs' shape, and return one score
per input; they are run through the registry in :mod:`.evaluate`:

====================================  ===========================================  =========
metric                                 implementation                               better
====================================  ===========================================  =========
the follow-up's seven (infidelity,     ours, vectorised, = Quantus 0.6.0 where      see
faithfulness correlation and           Quantus has the metric (:mod:`.suite`)       there
estimate, monotonicity correlation,
max-sensitivity, random logit, Focus)
model-parameter randomisation          ours (:mod:`.randomisation`), cascading      lower
                                       over a few layer blocks, Spearman of |a|
region perturbation (MoRF deletion)    Quantus (:mod:`.quantus`), summarised        higher
                                       as the area over the curve (AOPC)
====================================  ===========================================  =========

Why the randomisation is ours: Quantus's ``MPRT`` re-initialises every module that has
``reset_parameters`` one at a time (about a hundred for EfficientNet-Lite0, each needing
every method's attributions again), far beyond a 15-minute CPU budget, so we cascade over
a handful of contiguous blocks instead (tested against hand-computed cases).

Perturbations replace pixels by a baseline *in the model's input space*: the models here
take ``[-1, 1]``, where ``0.0`` is mid-grey (the default).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["heatmap", "spearman", "pearson", "mean_se", "bootstrap_ci"]


# --------------------------------------------------------------------------- helpers


def device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextmanager
def forked_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG (CPU, and the model's CUDA device) and numpy's global one (Captum's
    GradientShap draws from it) inside, restore both after."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices), numpy_rng_preserved():
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        yield


@contextmanager
def numpy_rng_preserved() -> Iterator[None]:
    """Quantus seeds numpy's global RNG; give the caller theirs back."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


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
