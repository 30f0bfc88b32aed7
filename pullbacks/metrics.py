"""Sanity checks and faithfulness metrics for attribution maps (used by ``pullbacks.evaluate``).

Every function here takes a model, a batch of inputs ``(N, C, H, W)``, one target class per
input and attribution maps of the inputs' shape, and returns one score per input. Where a
well-tested library implements a metric the way we need it, we call the library:

====================================  ===========================================  =========
metric                                 implementation                               better
====================================  ===========================================  =========
model-parameter randomisation          ours (:func:`randomised_copies`), cascading  lower
                                       over a few layer blocks, Spearman of |a|
random-logit check                     Quantus ``RandomLogit`` (Sixt et al. 2020)   lower
faithfulness correlation, patches      ours (:func:`faithfulness_correlation`)      higher
infidelity, patch removal              Captum ``captum.metrics.infidelity``         lower
region perturbation (MoRF deletion)    Quantus ``RegionPerturbation``, summarised   higher
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

import copy
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Block",
    "randomisation_blocks",
    "randomised_copies",
    "reinitialise",
    "heatmap",
    "spearman",
    "pearson",
    "patch_masks",
    "faithfulness_correlation",
    "infidelity",
    "region_perturbation",
    "random_logit",
    "mean_se",
    "bootstrap_ci",
]


# --------------------------------------------------------------------------- helpers


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def _forked_rng(seed: int, device: torch.device):
    """Seed torch's RNG (CPU, and the model's CUDA device) inside, restore it after."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def _numpy_rng_preserved():
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


# --------------------------------------------------------------------------- randomisation


@dataclass(frozen=True)
class Block:
    """Contiguous layers re-initialised together: ``modules`` are qualified module names."""

    label: str
    modules: tuple[str, ...]


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly, in registration (≈ forward) order."""
    seen, layers = set(), []
    for name, m in model.named_modules():
        if id(m) in seen:
            continue
        seen.add(id(m))
        if any(True for _ in m.parameters(recurse=False)):
            layers.append((name, m))
    return layers


def _short_names(names: list[str]) -> list[str]:
    """Drop the dotted prefix every name shares (``net.`` of our input-space wrapper)."""
    parts = [n.split(".") for n in names]
    k = 0
    while len(parts) > 1 and all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return [".".join(p[k:]) for p in parts]


def _shared(a: str, b: str) -> int:
    """How many leading name components two layer names share (``layer3.5.bn3`` vs ``layer4.0.conv1``: 0)."""
    n = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        n += 1
    return n


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def randomisation_blocks(model: nn.Module, n_blocks: int = 5) -> list[Block]:
    """Split ``model``'s parameterised layers into ``n_blocks`` contiguous blocks, top first.

    The top block is the last layer alone (the logits, where Adebayo et al. start). The
    other layers are split into ``n_blocks - 1`` groups of about equal numbers of layers,
    preferring cuts between coarse parts of the module tree: each cut minimises
    ``|position - ideal| / group size + 0.5 * (name components shared across the cut)``,
    so ``layer3 | layer4`` beats ``layer4.0 | layer4.1``, which beats a cut inside a
    residual block. Labels name the parts a block spans (``blocks.5–bn2``, ``layer4``).
    """
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1:
        raise ValueError(f"n_blocks must be an integer >= 1, got {n_blocks!r}")
    layers = _layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no parameters to randomise")
    names = [n for n, _ in layers]
    short = _short_names(names)
    level = [0] + [_shared(short[c - 1], short[c]) for c in range(1, len(short))]  # level[c]: cut before c
    if n_blocks >= len(layers):
        bounds = list(range(len(layers), -1, -1))
    else:
        rest = len(layers) - 1  # layers below the top one
        k = n_blocks - 1
        bounds, upper = [len(layers), rest], rest
        for j in range(1, k):  # cut positions, from the top down
            ideal = rest - j * rest / k
            remaining = k - j  # groups still to make below this cut
            c = min(range(remaining, upper), key=lambda c: (abs(c - ideal) / (rest / k) + 0.5 * level[c], -c))
            bounds.append(c)
            upper = c
        bounds.append(0)
    blocks = []
    for hi, lo in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        depth = max(level[lo], level[hi] if hi < len(short) else 0) + 1  # enough to tell the cuts apart
        first, last = _prefix(short[lo], depth), _prefix(short[hi - 1], depth)
        label = first if first == last else f"{first}–{last}"
        blocks.append(Block(label, tuple(names[lo:hi])))
    return blocks


def reinitialise(module: nn.Module) -> None:
    """Re-initialise the parameters ``module`` owns directly, as PyTorch would at construction.

    ``reset_parameters()`` where the module has it (convolutions, linear layers; BatchNorm
    also resets its running statistics to mean 0, variance 1); otherwise PyTorch's default
    layer initialisation: Kaiming-uniform (``a = sqrt(5)``) for weights of two or more
    dimensions, uniform in ``±1/sqrt(n)`` for vectors.
    """
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            if p.dim() >= 2:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            else:
                bound = 1 / math.sqrt(max(1, p.numel()))
                nn.init.uniform_(p, -bound, bound)


def randomised_copies(
    model: nn.Module, blocks: Sequence[Block] | int = 5, *, seed: int = 0
) -> Iterator[tuple[Block, nn.Module]]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018), top block first.

    Yields ``(block, copy)`` where ``copy`` is one deep copy of ``model`` in which this block
    and every block yielded before it have been re-initialised (:func:`reinitialise`). The
    same copy object is mutated from one step to the next; ``model`` itself is never
    touched. Re-initialisation draws from torch's RNG seeded with ``seed + step`` and
    restores the global RNG state afterwards.
    """
    if isinstance(blocks, int):
        blocks = randomisation_blocks(model, blocks)
    clone = copy.deepcopy(model).eval()
    modules = dict(clone.named_modules())
    device = _device_of(clone)
    for step, block in enumerate(blocks):
        missing = [n for n in block.modules if n not in modules]
        if missing:
            raise ValueError(f"block {block.label!r} names modules the model does not have: {missing}")
        with _forked_rng(seed + step, device):
            for name in block.modules:
                reinitialise(modules[name])
        yield block, clone


# --------------------------------------------------------------------------- perturbations


def _patch_grid(h: int, w: int, patch: int) -> tuple[int, int]:
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(f"patch must be an integer >= 1, got {patch!r}")
    return math.ceil(h / patch), math.ceil(w / patch)


def _upsample(masks: Tensor, patch: int, h: int, w: int) -> Tensor:
    """``(..., gh, gw)`` patch masks → ``(..., 1, h, w)`` pixel masks (edge patches cropped)."""
    m = masks.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)[..., :h, :w]
    return m.unsqueeze(-3)


def _patch_sums(a: Tensor, patch: int) -> Tensor:
    """``(N, C, H, W)`` → ``(N, gh * gw)``: the attribution summed over each patch and channel."""
    n, _, h, w = a.shape
    gh, gw = _patch_grid(h, w, patch)
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
    gh, gw = _patch_grid(h, w, patch)
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
        perturbed = torch.where(_upsample(m[i], patch, h, w), grey, inputs[i])
        after = _logits(model, perturbed, targets[i].repeat(r), batch)
        drops[i] = (base[i] - after).double().cpu().numpy()
    scores = {}
    for method, a in attributions.items():
        sums = _patch_sums(a, patch).cpu().numpy()  # (n, patches)
        s = np.einsum("nrp,np->nr", masks.astype(np.float64), sums)
        scores[method] = pearson(s, drops)
    return scores


def infidelity(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    *,
    patch: int = 56,
    p: float = 0.25,
    samples: int = 32,
    baseline: float = 0.0,
    seed: int = 0,
    batch: int = 16,
) -> dict[str, np.ndarray]:
    """Infidelity (Yeh et al. 2019) with Captum's implementation, ``normalize=True``.

    ``E_I[(beta * I·a - (f(x) - f(x - I)))^2]`` where ``I`` removes each ``patch × patch``
    square independently with probability ``p`` (replaces it by ``baseline``; Yeh et al.'s
    "square removal") and ``beta`` is the least-squares scale, so a constant rescaling of
    an attribution does not change its score. Lower is better; the unit is logit². Every
    method sees the same random perturbations.
    """
    from captum.metrics import infidelity as captum_infidelity

    n, _, h, w = inputs.shape
    gh, gw = _patch_grid(h, w, patch)
    device = inputs.device
    scores = {}
    # which squares go: drawn once for all inputs and samples, so the numbers depend on
    # neither the batch size nor the method (every method sees the same perturbations)
    gen = torch.Generator().manual_seed(seed)
    removed_all = (torch.rand(n, samples, gh, gw, generator=gen) < p).to(device)
    grey = torch.as_tensor(baseline, dtype=inputs.dtype, device=device)
    for method, a in attributions.items():
        values = []
        for i in range(0, n, batch):  # Captum needs every sub-batch to hold whole inputs
            xs, ts, as_ = inputs[i:i + batch], targets[i:i + batch], a[i:i + batch].to(inputs.dtype)
            k = xs.shape[0]
            used = [0]  # samples handed out so far; Captum asks for them in order

            def perturb(x: Tensor, removed=removed_all[i:i + k], used=used) -> tuple[Tensor, Tensor]:
                per_input = x.shape[0] // k  # Captum repeats each input `per_input` times in a row
                m = removed[:, used[0]:used[0] + per_input].reshape(-1, gh, gw)
                used[0] += per_input
                perturbed = torch.where(_upsample(m, patch, h, w), grey, x)
                return x - perturbed, perturbed  # (I, x - I)

            per_batch = max(1, min(samples, batch // k)) * k  # whole inputs per sub-batch
            with torch.no_grad():
                values.append(captum_infidelity(
                    model, perturb, xs, as_, target=ts, n_perturb_samples=samples,
                    max_examples_per_batch=per_batch, normalize=True,
                ))
        value = torch.cat(values)
        scores[method] = value.double().cpu().numpy()
    return scores


@contextmanager
def _quiet():
    """Quantus warns about its parameterisation on every call; the report documents it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def region_perturbation(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    *,
    patch: int = 56,
    regions: int | None = None,
    baseline: float = 0.0,
    batch: int = 16,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Region perturbation, most relevant first (Samek et al. 2017), with Quantus.

    Quantus's ``RegionPerturbation`` ranks the non-overlapping ``patch × patch`` squares by
    their summed signed attribution and replaces them by ``baseline`` one after another,
    recording the drop of the target logit ``f(x) - f(x_k)`` after each. Returns
    ``(aopc, curves)``: per input, the mean drop over the ``regions`` steps (the area over
    the perturbation curve, higher is better) and the curves themselves ``(N, regions)``.
    Attributions are summed over channels (pass ``|a|`` maps to rank by magnitude).
    """
    import quantus

    n, _, h, w = inputs.shape
    gh, gw = _patch_grid(h, w, patch)
    regions = gh * gw if regions is None else regions
    x = inputs.detach().cpu().numpy().astype(np.float32)
    y = targets.cpu().numpy()
    metric = quantus.RegionPerturbation(
        patch_size=patch, regions_evaluation=regions, order="morf", perturb_baseline=float(baseline),
        abs=False, normalise=False, return_aggregate=False, disable_warnings=True,
    )
    # every method's copy of the inputs goes through Quantus as one stacked batch: the
    # samples are independent, and the model then runs on batches of `batch` images
    keys = list(attributions)
    a_np = np.concatenate([attributions[k].detach().sum(1, keepdim=True).cpu().numpy() for k in keys])
    with _quiet(), _numpy_rng_preserved():
        result = metric(model=model, x_batch=np.concatenate([x] * len(keys)), y_batch=np.tile(y, len(keys)),
                        a_batch=a_np.astype(np.float32), channel_first=True, softmax=False,
                        device=str(inputs.device), batch_size=batch)
    stacked = np.asarray(result, dtype=np.float64).reshape(len(keys), n, -1)
    curves = {k: stacked[i] for i, k in enumerate(keys)}
    aopc = {k: c.mean(axis=1) for k, c in curves.items()}
    return aopc, curves


def random_logit(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    explain_func: Callable[..., np.ndarray],
    *,
    num_classes: int,
    seed: int = 0,
    batch: int = 16,
    explain_kwargs: dict[str, dict] | None = None,
) -> dict[str, np.ndarray]:
    """The random-logit check (Sixt et al. 2020) with Quantus's ``RandomLogit``.

    Each input is explained again for one uniformly drawn *other* class (the same class for
    every method, Quantus's ``seed``); the score is the Spearman rank correlation of the two
    ``|a|`` maps (summed over channels). Lower: the explanation depends on the class asked
    about. ``explain_func(model, inputs, targets, **explain_kwargs[method])`` must return
    the channel-summed ``|a|`` as ``(N, 1, H, W)``.
    """
    import quantus
    from quantus.functions.similarity_func import correlation_spearman

    x = inputs.detach().cpu().numpy().astype(np.float32)
    y = targets.cpu().numpy()
    scores = {}
    for method, a in attributions.items():
        metric = quantus.RandomLogit(
            num_classes=num_classes, seed=seed, similarity_func=correlation_spearman,
            abs=True, normalise=False, return_aggregate=False, disable_warnings=True,
        )
        a_np = heatmap(a, "abs")[:, None].astype(np.float32)
        kwargs = dict((explain_kwargs or {}).get(method, {}), method=method)
        with _quiet(), _numpy_rng_preserved():
            result = metric(model=model, x_batch=x, y_batch=y, a_batch=a_np, explain_func=explain_func,
                            explain_func_kwargs=kwargs, channel_first=True, softmax=False,
                            device=str(inputs.device), batch_size=batch)
        scores[method] = np.asarray(result, dtype=np.float64).reshape(-1)
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
