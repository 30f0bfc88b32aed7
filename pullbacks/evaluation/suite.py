"""The follow-up's metrics (docs/method.md, "Evaluation"), vectorised in torch, written to
give Quantus 0.6.0's numbers where Quantus has the metric (its source is the definition;
the tests compare).

Every function takes the model, a batch ``x`` (N, C, H, W) in [-1, 1], one target per
image, and attributions ``{method: (N, C, H, W)}``, and returns ``{method: (N,) array}``.
Where a metric wants one value per pixel, ``a`` is the attribution summed over channels
(its absolute value where the metric says ``abs``) and, as in Quantus, broadcast back over
the channels. Patches tile the image row-major; where they do not divide it the last row
and column are cut at the border (the edge-padded tiling, cropped). Random draws come from
``seeds`` (one per image, see ``data.image_seed``), so no number depends on the batch, the
order or the process count. The model runs once per perturbation, whatever the number of
methods: every method of an image sees the same perturbations.

========================  =============================================================
infidelity                for every patch of each size (theirs: 112 and 56 px) and each of
                          ``draws`` (5) draws, ``I`` replaces that patch alone by uniform
                          noise in [-1, 1]: ``a_I = <a, I>``, ``b_I = f(x) - f(x - I)``;
                          ``β = Σ a_I b_I / Σ a_I²`` over all of them; the score is
                          ``mean (β a_I - b_I)²`` (optimal scaling; unit logit²)
faithfulness_correlation  Pearson, over all patches (56 px), of the patch's |a| mass and the
                          logit drop when the patch alone is set to ``baseline`` (0)
faithfulness_estimate     Pearson, over chunks of ``features`` entries taken in descending |a|,
                          of the chunk's |a| mass and the logit drop when it alone is set to
                          ``baseline`` (theirs: 3136 a step, baseline 0)
monotonicity_correlation  Spearman, over chunks taken in ascending |a|, of the chunk's |a|
                          mass and the mean squared logit change over ``samples`` draws of the
                          chunk alone replaced by uniform noise in [-1, 1] (theirs: 10, 3136)
max_sensitivity           max over ``samples`` draws of uniform noise in [-r, r] (r 0.02) of
                          ‖a(x + noise) − a(x)‖ / ‖a(x)‖ (theirs: 10 samples)
random_logit              Pearson of ``a`` for the target and ``a`` for one other class drawn
                          uniformly from the model's (1000) classes
focus                     on a 2×2 mosaic, the share of positive relevance that falls in the
                          target's tiles (theirs: 500 mosaics)
========================  =============================================================
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .metrics import pearson, spearman


@torch.no_grad()
def _target_logits(model: nn.Module, xs: Tensor, target: int, batch: int, softmax: bool = False) -> Tensor:
    outs = []
    for i in range(0, xs.shape[0], batch):
        out = model(xs[i:i + batch])
        outs.append((out.softmax(1) if softmax else out)[:, target])
    return torch.cat(outs).double().cpu()


def _pixel_values(a: Tensor, channels: int) -> np.ndarray:
    """|Σ_c a_c| broadcast over the channels, flattened (what Quantus ranks)."""
    return np.broadcast_to(a.sum(0).abs().double().cpu().numpy()[None], (channels, *a.shape[1:])).reshape(-1)


def blocks(h: int, w: int, patch: int) -> list[tuple[slice, slice]]:
    """The ``patch × patch`` squares tiling an ``h × w`` image, row-major, cut at the border."""
    return [(slice(r, min(r + patch, h)), slice(c, min(c + patch, w)))
            for r in range(0, h, patch) for c in range(0, w, patch)]


def _chunks(n_features: int, features: int) -> list[slice]:
    return [slice(i * features, (i + 1) * features) for i in range(math.ceil(n_features / features))]


def faithfulness_estimate(model: nn.Module, x: Tensor, targets: Tensor, attributions: dict[str, Tensor], *,
                          features: int = 3136, baseline: float = 0.0, batch: int = 64) -> dict[str, np.ndarray]:
    """Quantus ``FaithfulnessEstimate(features_in_step=features, perturb_baseline=baseline, abs=True)``."""
    out: dict[str, list] = {m: [] for m in attributions}
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        y = float(_target_logits(model, xi[None], t, 1)[0])
        for m, a in attributions.items():
            values = _pixel_values(a[i], xi.shape[0])
            order = np.argsort(-values)  # Quantus' own order, ties included
            steps = _chunks(values.size, features)
            perturbed = xi.reshape(1, -1).repeat(len(steps), 1)
            for s, chunk in enumerate(steps):
                perturbed[s, torch.from_numpy(order[chunk].copy()).to(x.device)] = baseline
            drops = y - _target_logits(model, perturbed.view(len(steps), *xi.shape), t, batch).numpy()
            masses = np.array([values[order[chunk]].sum() for chunk in steps])
            out[m].append(pearson(masses[None], drops[None])[0])
    return {m: np.array(v) for m, v in out.items()}


def monotonicity_correlation(model: nn.Module, x: Tensor, targets: Tensor, attributions: dict[str, Tensor],
                             seeds: Sequence[int], *, features: int = 3136, samples: int = 10, eps: float = 1e-12,
                             baseline: float | None = None, softmax: bool = False, batch: int = 64
                             ) -> dict[str, np.ndarray]:
    """Quantus ``MonotonicityCorrelation(nr_samples=samples, features_in_step=features,
    perturb_baseline="uniform" in [-1, 1], abs=True, eps=eps)`` on the target's logit (Quantus
    calls it with ``softmax=True`` by default, on probabilities: ``softmax=True`` here too);
    every method of an image sees the same noise draws (``baseline``: a constant instead)."""
    out: dict[str, list] = {m: [] for m in attributions}
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        y = float(_target_logits(model, xi[None], t, 1, softmax)[0])
        scale = 1.0 / y ** 2 if abs(y) >= eps else 1.0
        for m, a in attributions.items():
            values = _pixel_values(a[i], xi.shape[0])
            order = np.argsort(values)
            steps = _chunks(values.size, features)
            g = torch.Generator().manual_seed(int(seeds[i]))
            perturbed = xi.reshape(1, -1).repeat(len(steps) * samples, 1)
            for s, chunk in enumerate(steps):
                idx = torch.from_numpy(order[chunk].copy()).to(x.device)
                noise = torch.rand(samples, idx.numel(), generator=g, dtype=torch.float64) * 2 - 1
                if baseline is not None:
                    noise.fill_(baseline)
                perturbed[s * samples:(s + 1) * samples, idx] = noise.to(x.dtype).to(x.device)
            ys = _target_logits(model, perturbed.view(-1, *xi.shape), t, batch, softmax).numpy().reshape(
                len(steps), samples)
            changes = ((ys - y) ** 2).mean(axis=1) * scale
            masses = np.array([values[order[chunk]].sum() for chunk in steps])
            out[m].append(spearman(masses[None], changes[None])[0])
    return {m: np.array(v) for m, v in out.items()}


def infidelity(model: nn.Module, x: Tensor, targets: Tensor, attributions: dict[str, Tensor], seeds: Sequence[int],
               *, patches: Sequence[int] = (112, 56), draws: int = 5, cumulative: bool = False,
               baseline: float | None = None, batch: int = 64) -> dict[str, np.ndarray]:
    """The follow-up's infidelity with optimal scaling (Yeh et al. 2019; Captum's ``normalize``):
    ``β`` is fitted once per image over all ``draws × Σ_p patches`` perturbations, so a
    rescaled attribution scores the same; ``a`` is the channel sum broadcast over channels.
    ``cumulative=True``: each perturbation keeps the earlier patches of its draw and size
    perturbed, as the follow-up's published loop (after Quantus' ``Infidelity``) does.
    ``baseline``: a constant instead of the noise (to compare with Quantus)."""
    out: dict[str, list] = {m: [] for m in attributions}
    h, w = x.shape[-2:]
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        g = torch.Generator().manual_seed(int(seeds[i]))
        perturbed = []
        for _ in range(draws):
            for p in patches:
                noise = (torch.rand(xi.shape, generator=g, dtype=torch.float64) * 2 - 1).to(xi.dtype).to(xi.device)
                if baseline is not None:
                    noise.fill_(baseline)
                xp = xi
                for rows, cols in blocks(h, w, p):
                    xp = (xp if cumulative else xi).clone()
                    xp[:, rows, cols] = noise[:, rows, cols]
                    perturbed.append(xp)
        xs = torch.stack(perturbed)
        b = float(_target_logits(model, xi[None], t, 1)[0]) - _target_logits(model, xs, t, batch)
        moved = (xi[None] - xs).double().sum(1).cpu()  # Σ_c I_c per pixel: (K, H, W)
        for m, a in attributions.items():
            a_i = (moved * a[i].double().sum(0).cpu()).flatten(1).sum(1)
            den = float((a_i * a_i).sum())
            beta = float((a_i * b).sum()) / (den if den != 0 else 1.0)  # Captum's safe division
            out[m].append(float(((beta * a_i - b) ** 2).mean()))
    return {m: np.array(v) for m, v in out.items()}


def faithfulness_correlation(model: nn.Module, x: Tensor, targets: Tensor, attributions: dict[str, Tensor], *,
                             patch: int = 56, baseline: float = 0.0, batch: int = 64) -> dict[str, np.ndarray]:
    """The follow-up's faithfulness correlation: Quantus ``FaithfulnessCorrelation(abs=True,
    perturb_baseline=baseline)`` with the random subsets replaced by every ``patch × patch``
    square, one at a time."""
    out: dict[str, list] = {m: [] for m in attributions}
    h, w = x.shape[-2:]
    squares = blocks(h, w, patch)
    for i in range(x.shape[0]):
        xi, t = x[i], int(targets[i])
        xs = xi[None].repeat(len(squares), 1, 1, 1)
        for k, (rows, cols) in enumerate(squares):
            xs[k, :, rows, cols] = baseline
        drops = float(_target_logits(model, xi[None], t, 1)[0]) - _target_logits(model, xs, t, batch).numpy()
        for m, a in attributions.items():
            values = a[i].double().sum(0).abs().cpu()
            masses = np.array([float(values[rows, cols].sum()) for rows, cols in squares])
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


def random_logit(attributions: dict[str, Tensor], explain: Callable[[str, Tensor], Tensor], other: Tensor
                 ) -> dict[str, np.ndarray]:
    """Quantus ``RandomLogit(similarity_func=correlation_pearson)`` (signed channel sums):
    Pearson of each method's ``a`` with ``explain(method, other)``, its attribution for the
    classes ``other`` (see :func:`random_classes`). Lower: it depends on the class asked about."""
    out = {}
    for m, a in attributions.items():
        b = explain(m, other)
        out[m] = pearson(a.double().sum(1).flatten(1).cpu().numpy(), b.double().sum(1).flatten(1).cpu().numpy())
    return out


def max_sensitivity(x: Tensor, attributions: dict[str, Tensor], explain: Callable[[str, Tensor], Tensor],
                    seeds: Sequence[int], *, samples: int = 10, radius: float = 0.02,
                    clip: tuple[float, float] | None = (-1.0, 1.0)) -> dict[str, np.ndarray]:
    """Quantus ``MaxSensitivity(nr_samples=samples, lower_bound=radius)`` on the channel sums:
    ``explain(method, x_noisy)`` recomputes a method's attribution; the noise is uniform in
    [-radius, radius], the same draws for every method of an image, and the noisy image is
    clamped to ``clip`` (the input space; Quantus does not clamp)."""
    out = {}
    for m, a in attributions.items():
        scores = []
        for i in range(x.shape[0]):
            g = torch.Generator().manual_seed(int(seeds[i]))
            noise = (torch.rand(samples, *x.shape[1:], generator=g, dtype=torch.float64) * 2 - 1) * radius
            noisy = (x[i][None] + noise.to(x.dtype).to(x.device)).contiguous()
            if clip is not None:
                noisy = noisy.clamp(*clip)
            ref = a[i].sum(0).double().cpu()
            moved = explain(m, noisy).sum(1).double().cpu()
            scores.append(float(((moved - ref).flatten(1).norm(dim=1) / ref.norm()).max()))
        out[m] = np.array(scores)
    return out


def focus(attributions: dict[str, Tensor], target_tiles: Sequence[Sequence[bool]]) -> dict[str, np.ndarray]:
    """Quantus ``Focus``: per 2×2 mosaic, the positive relevance (summed over channels) in
    the tiles marked True (the target's, row-major), over all positive relevance."""
    out = {}
    for m, a in attributions.items():
        r = a.sum(1).clamp(min=0).double().cpu()  # (N, H, W)
        h, w = r.shape[-2] // 2, r.shape[-1] // 2
        tiles = torch.stack([r[:, :h, :w], r[:, :h, w:], r[:, h:, :w], r[:, h:, w:]], 1).flatten(2).sum(2)
        mask = torch.tensor([list(map(bool, t)) for t in target_tiles])
        with np.errstate(invalid="ignore"):
            out[m] = ((tiles * mask).sum(1) / tiles.sum(1)).numpy()
    return out
