"""The follow-up's seven metrics (docs/method.md, "Evaluation"), vectorised in torch, written
to give Quantus 0.6.0's numbers where Quantus has the metric (its source is the definition;
the tests compare).

Every function takes the model, a batch ``x`` (N, C, H, W) in [-1, 1], one target per
image, and attributions ``{method: (N, C, H, W)}``, and returns ``{method: (N,) array}``.
**Attributions keep one value per colour channel**: a sum "over a patch" or "over a chunk"
runs over every entry ``a[c, i, j]`` in it (Quantus with ``reduce_axes=()``). Patches tile
the image row-major; where they do not divide it the last row and column are cut at the
border (the edge-padded tiling, cropped). The **uniform baseline** is Quantus' batched one:
one value drawn from U[-1, 1] per image and per perturbation, written into every entry of
the patch or chunk it replaces. Random draws come from ``seeds`` (one per image, see
``data.image_seed``), so no number depends on the batch, the order or the process count;
orders are stable sorts, so ties are broken by position and a rerun gives the same digits.
The model runs once per perturbation, whatever the number of methods: every method of an
image sees the same perturbations.

========================  =============================================================
infidelity                for each of ``draws`` (5) draws and each patch size (112, 56 px),
                          the patches replaced one after another by the uniform baseline,
                          each earlier patch kept replaced (``cumulative``, the follow-up's
                          loop); ``a_I = Σ a ⊙ I``, ``b_I = f(x) − f(x − I)``;
                          ``β = Σ a_I b_I / Σ a_I²`` per image; ``mean (β a_I − b_I)²``
faithfulness_correlation  Pearson, over every patch (56 px), of ``Σ_patch |a|`` and the
                          logit drop when the patch alone is set to ``baseline`` (0)
faithfulness_estimate     Pearson, over chunks of ``features`` (3136) entries in descending
                          ``|a|``, of ``Σ_chunk |a|`` and the logit drop when the chunk alone
                          is set to ``baseline`` (0)
monotonicity_correlation  Spearman, over the chunks in ascending ``|a|``, of ``Σ_chunk |a|``
                          and ``mean_s (p(x) − p(x'_s))² / p(x)²`` over ``samples`` (10)
                          uniform-baseline draws of the chunk; ``p`` the softmax probability
max_sensitivity           ``max_s ‖a(x + δ_s) − a(x)‖ / ‖a(x)‖``, ``δ_s`` uniform in [-r, r]
                          per entry (r 0.02, 10 samples)
random_logit              Pearson, over all entries, of ``a`` for the target and for one other
                          class drawn uniformly from the rest
focus                     on a 2×2 mosaic, ``r = max(x ⊙ a, 0)`` per entry:
                          ``Σ_target tiles r / (Σ r + 1e-9)``
========================  =============================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .metrics import pearson, spearman


@torch.no_grad()
def _target_outputs(model: nn.Module, xs: Tensor, target: int, batch: int, softmax: bool = False) -> Tensor:
    """The target's logit (or softmax probability) for each of ``xs``, float64 on the CPU."""
    outs = []
    for i in range(0, xs.shape[0], batch):
        out = model(xs[i : i + batch])
        outs.append((out.softmax(1) if softmax else out)[:, target])
    return torch.cat(outs).double().cpu()


def _magnitudes(a: Tensor) -> np.ndarray:
    """``|a|`` over all ``C·H·W`` entries, flattened, float64 (Quantus' ``abs=True``)."""
    return a.detach().abs().double().cpu().reshape(-1).numpy()


def _uniform(seed: int, count: int, baseline: float | None) -> Tensor:
    """``count`` values of the uniform baseline (one per perturbation) drawn from ``seed``, or
    the constant ``baseline``."""
    if baseline is not None:
        return torch.full((count,), float(baseline), dtype=torch.float64)
    return torch.rand(count, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64) * 2 - 1


def blocks(h: int, w: int, patch: int) -> list[tuple[slice, slice]]:
    """The ``patch × patch`` squares tiling an ``h × w`` image, row-major, cut at the border."""
    return [
        (slice(r, min(r + patch, h)), slice(c, min(c + patch, w)))
        for r in range(0, h, patch)
        for c in range(0, w, patch)
    ]


def chunks(n_features: int, features: int) -> list[slice]:
    """Consecutive runs of ``features`` positions over ``n_features`` (the last one shorter)."""
    return [slice(i * features, min((i + 1) * features, n_features)) for i in range(math.ceil(n_features / features))]


def faithfulness_estimate(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    *,
    features: int = 3136,
    baseline: float = 0.0,
    batch: int = 64,
) -> dict[str, np.ndarray]:
    """Quantus ``FaithfulnessEstimate(features_in_step=features, perturb_baseline=baseline, abs=True)``
    on all ``C·H·W`` entries (ties in ``|a|`` taken in entry order)."""
    out: dict[str, list] = {m: [] for m in attributions}
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        y = float(_target_outputs(model, xi[None], t, 1)[0])
        for m, a in attributions.items():
            values = _magnitudes(a[i])
            order = torch.from_numpy(np.argsort(-values, kind="stable"))
            steps = chunks(values.size, features)
            perturbed = xi.reshape(1, -1).repeat(len(steps), 1)
            for s, chunk in enumerate(steps):
                perturbed[s, order[chunk].to(x.device)] = baseline
            drops = y - _target_outputs(model, perturbed.view(len(steps), *xi.shape), t, batch).numpy()
            masses = np.array([values[order[chunk].numpy()].sum() for chunk in steps])
            out[m].append(pearson(masses[None], drops[None])[0])
    return {m: np.array(v) for m, v in out.items()}


def monotonicity_correlation(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    seeds: Sequence[int],
    *,
    features: int = 3136,
    samples: int = 10,
    eps: float = 1e-12,
    baseline: float | None = None,
    softmax: bool = True,
    batch: int = 64,
) -> dict[str, np.ndarray]:
    """Quantus ``MonotonicityCorrelation(nr_samples=samples, features_in_step=features,
    perturb_baseline="uniform" in [-1, 1], abs=True, eps=eps)`` called with its default
    ``softmax=True`` (probabilities; ``softmax=False``: logits, a variant of ours); every
    method of an image sees the same draws (``baseline``: a constant instead)."""
    out: dict[str, list] = {m: [] for m in attributions}
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        y = float(_target_outputs(model, xi[None], t, 1, softmax)[0])
        scale = 1.0 / abs(y) ** 2 if abs(y) >= eps else 1.0  # Quantus' inv_pred
        for m, a in attributions.items():
            values = _magnitudes(a[i])
            order = torch.from_numpy(np.argsort(values, kind="stable"))
            steps = chunks(values.size, features)
            fills = _uniform(seeds[i], len(steps) * samples, baseline).to(x.dtype).to(x.device)
            perturbed = xi.reshape(1, -1).repeat(len(steps) * samples, 1)
            for s, chunk in enumerate(steps):
                rows = slice(s * samples, (s + 1) * samples)
                perturbed[rows, order[chunk].to(x.device)] = fills[rows, None]
            ys = _target_outputs(model, perturbed.view(-1, *xi.shape), t, batch, softmax).numpy()
            changes = ((ys.reshape(len(steps), samples) - y) ** 2).mean(axis=1) * scale
            masses = np.array([values[order[chunk].numpy()].sum() for chunk in steps])
            out[m].append(spearman(masses[None], changes[None])[0])
    return {m: np.array(v) for m, v in out.items()}


def infidelity(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    seeds: Sequence[int],
    *,
    patches: Sequence[int] = (112, 56),
    draws: int = 5,
    cumulative: bool = True,
    baseline: float | None = None,
    batch: int = 64,
) -> dict[str, np.ndarray]:
    """The follow-up's infidelity with optimal scaling (Yeh et al. 2019): ``β`` is fitted once
    per image over all ``draws × Σ_p patches`` perturbations, so a rescaled attribution scores
    the same. ``cumulative`` (the follow-up's loop, after Quantus' ``Infidelity``): within a
    draw and a patch size each perturbation keeps the earlier patches replaced; False: one
    patch at a time (a variant of ours). ``baseline``: a constant instead of the draws."""
    out: dict[str, list] = {m: [] for m in attributions}
    h, w = x.shape[-2:]
    squares = [blocks(h, w, p) for p in patches]
    count = draws * sum(map(len, squares))
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        fills = _uniform(seeds[i], count, baseline).to(xi.dtype).to(xi.device)
        perturbed, k = [], 0
        for _ in range(draws):
            for tiling in squares:
                xp = xi
                for rows, cols in tiling:
                    xp = (xp if cumulative else xi).clone()
                    xp[:, rows, cols] = fills[k]
                    perturbed.append(xp)
                    k += 1
        xs = torch.stack(perturbed)
        b = float(_target_outputs(model, xi[None], t, 1)[0]) - _target_outputs(model, xs, t, batch)
        moved = (xi[None] - xs).double().cpu().flatten(1)  # I, every entry: (K, C·H·W)
        for m, a in attributions.items():
            a_i = moved @ a[i].detach().double().cpu().reshape(-1)
            den = float((a_i * a_i).sum())
            beta = float((a_i * b).sum()) / (den if den != 0 else 1.0)  # Captum's safe division
            out[m].append(float(((beta * a_i - b) ** 2).mean()))
    return {m: np.array(v) for m, v in out.items()}


def faithfulness_correlation(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    *,
    patch: int = 56,
    baseline: float = 0.0,
    batch: int = 64,
) -> dict[str, np.ndarray]:
    """The follow-up's faithfulness correlation: Quantus ``FaithfulnessCorrelation(abs=True,
    perturb_baseline=baseline)`` with the random subsets replaced by every ``patch × patch``
    square (all channels), one at a time."""
    out: dict[str, list] = {m: [] for m in attributions}
    h, w = x.shape[-2:]
    squares = blocks(h, w, patch)
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        xs = xi[None].repeat(len(squares), 1, 1, 1)
        for k, (rows, cols) in enumerate(squares):
            xs[k, :, rows, cols] = baseline
        drops = float(_target_outputs(model, xi[None], t, 1)[0]) - _target_outputs(model, xs, t, batch).numpy()
        for m, a in attributions.items():
            values = a[i].detach().abs().double().cpu()
            masses = np.array([float(values[:, rows, cols].sum()) for rows, cols in squares])
            out[m].append(pearson(masses[None], drops[None])[0])
    return {m: np.array(v) for m, v in out.items()}


def random_classes(targets: Tensor, seeds: Sequence[int], num_classes: int) -> Tensor:
    """For each image, one class other than its target, uniform over the rest, drawn from its seed."""
    if num_classes < 2:
        raise ValueError(f"the random logit needs a model with at least 2 classes, got {num_classes}")
    drawn = []
    for t, seed in zip(targets.tolist(), seeds):
        c = int(torch.randint(num_classes - 1, (1,), generator=torch.Generator().manual_seed(int(seed))))
        drawn.append(c + (c >= t))
    return torch.tensor(drawn, dtype=torch.long, device=targets.device)


def random_logit(
    attributions: dict[str, Tensor], explain: Callable[[str, Tensor], Tensor], other: Tensor
) -> dict[str, np.ndarray]:
    """Quantus ``RandomLogit(similarity_func=correlation_pearson)``: Pearson, over all entries,
    of each method's ``a`` and ``explain(method, other)``, its attribution for the classes
    ``other`` (see :func:`random_classes`). Lower: it depends on the class asked about."""
    out = {}
    for m, a in attributions.items():
        b = explain(m, other)
        out[m] = pearson(a.detach().double().flatten(1).cpu().numpy(), b.detach().double().flatten(1).cpu().numpy())
    return out


def max_sensitivity(
    x: Tensor,
    attributions: dict[str, Tensor],
    explain: Callable[[str, Tensor], Tensor],
    seeds: Sequence[int],
    *,
    samples: int = 10,
    radius: float = 0.02,
    clip: tuple[float, float] | None = (-1.0, 1.0),
) -> dict[str, np.ndarray]:
    """Quantus ``MaxSensitivity(nr_samples=samples, lower_bound=radius)`` on all entries:
    ``explain(method, x_noisy)`` recomputes a method's attribution; the noise is uniform in
    [-radius, radius] per entry, the same draws for every method of an image, and the noisy
    image is clamped to ``clip`` (the input space; Quantus does not clamp; None: no clamp)."""
    out = {}
    for m, a in attributions.items():
        scores = []
        for i in range(x.shape[0]):
            g = torch.Generator().manual_seed(int(seeds[i]))
            noise = (torch.rand(samples, *x.shape[1:], generator=g, dtype=torch.float64) * 2 - 1) * radius
            noisy = (x[i][None] + noise.to(x.dtype).to(x.device)).contiguous()
            if clip is not None:
                noisy = noisy.clamp(*clip)
            ref = a[i].detach().double().cpu().reshape(-1)
            moved = explain(m, noisy).detach().double().cpu().flatten(1)
            scores.append(float(((moved - ref).norm(dim=1) / ref.norm()).max()))
        out[m] = np.array(scores)
    return out


def focus(attributions: dict[str, Tensor], target_tiles: Sequence[Sequence[bool]], x: Tensor) -> dict[str, np.ndarray]:
    """Quantus ``Focus`` on the relevance ``r = x ⊙ a`` (the follow-up's input-attribution
    product), clipped at 0 entry by entry: per 2×2 mosaic ``x``, ``Σ r`` in the tiles marked
    True (the target's, row-major) over ``Σ r + 1e-9`` (a map with no positive relevance
    scores 0)."""
    out = {}
    mask = torch.tensor([list(map(bool, t)) for t in target_tiles], dtype=torch.float64)
    for m, a in attributions.items():
        r = (x.detach().double() * a.detach().double()).clamp(min=0).sum(1).cpu()  # (N, H, W)
        h, w = r.shape[-2] // 2, r.shape[-1] // 2
        tiles = torch.stack([r[:, :h, :w], r[:, :h, w:], r[:, h:, :w], r[:, h:, w:]], 1).flatten(2).sum(2)
        out[m] = ((tiles * mask).sum(1) / (r.flatten(1).sum(1) + 1e-9)).numpy()
    return out


# --------------------------------------------------------------------------- against known evidence


def _heatmaps(a: Tensor) -> Tensor:
    """``h = Σ_c a_c`` per pixel, flattened: (N, H·W) float64."""
    return a.detach().double().sum(1).flatten(1).cpu()


def _masks(masks: Tensor) -> Tensor:
    return torch.as_tensor(masks).bool().flatten(1).cpu()


def relevance_mass_accuracy(attributions: dict[str, Tensor], masks: Tensor) -> dict[str, np.ndarray]:
    """``Σ_M h⁺ / Σ h⁺`` with ``h = Σ_c a_c``, ``h⁺ = max(h, 0)`` (Arras et al. 2022; Quantus
    ``RelevanceMassAccuracy`` given ``h⁺``): the share of positive relevance on the pixels that
    decide the class. NaN when the map has no positive relevance or the mask is empty."""
    m = _masks(masks)
    out = {}
    for name, a in attributions.items():
        h = _heatmaps(a).clamp(min=0)
        total = h.sum(1)
        score = (h * m).sum(1) / torch.where(total > 0, total, torch.ones_like(total))
        out[name] = torch.where((total > 0) & m.any(1), score, torch.full_like(score, float("nan"))).numpy()
    return out


def relevance_rank_accuracy(attributions: dict[str, Tensor], masks: Tensor) -> dict[str, np.ndarray]:
    """``|top_K(h) ∩ M| / K`` with ``K = |M|``: the share of the mask among the ``K`` pixels of
    largest ``h = Σ_c a_c`` (ties taken in pixel order; Quantus ``RelevanceRankAccuracy``)."""
    m = _masks(masks)
    k = m.sum(1)
    out = {}
    for name, a in attributions.items():
        order = torch.from_numpy(np.argsort(-_heatmaps(a).numpy(), axis=1, kind="stable"))
        hits = torch.gather(m, 1, order).double()
        top = torch.arange(m.shape[1])[None] < k[:, None]
        score = (hits * top).sum(1) / k.clamp(min=1)
        out[name] = torch.where(k > 0, score, torch.full_like(score, float("nan"))).numpy()
    return out


def pointing_game(attributions: dict[str, Tensor], masks: Tensor) -> dict[str, np.ndarray]:
    """1 if the pixel of largest ``h = Σ_c a_c`` lies in the mask, else 0 (a tie for the largest
    counts as a hit if any tied pixel is in the mask, as Quantus ``PointingGame`` does)."""
    m = _masks(masks)
    out = {}
    for name, a in attributions.items():
        h = _heatmaps(a)
        top = h == h.max(1, keepdim=True).values
        score = (top & m).any(1).double()
        out[name] = torch.where(m.any(1), score, torch.full_like(score, float("nan"))).numpy()
    return out
