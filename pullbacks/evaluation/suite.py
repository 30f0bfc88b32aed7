"""The follow-up's metrics (docs/method.md, "Evaluation"), vectorised in torch, written to
give Quantus 0.6.0's numbers (its source is the definition; the tests compare).

Every function takes the model, a batch ``x`` (N, C, H, W) in [-1, 1], one target per
image, and attributions ``{method: (N, C, H, W)}``, and returns ``{method: (N,) array}``.
Where a metric wants one value per pixel, ``a`` is the attribution summed over channels
(its absolute value where the metric says ``abs``) and, as in Quantus, broadcast back over
the channels when pixels are ranked. Random draws come from ``seeds`` (one per image, see
``data.image_seed``), so no number depends on the batch, the order or the process count.

====================  =================================================================
faithfulness_estimate  Pearson, over chunks of ``features`` entries taken in descending |a|,
                       of the chunk's |a| mass and the logit drop when it alone is set to
                       ``baseline`` (theirs: 3136 a step, baseline 0)
monotonicity_corr.     Spearman, over chunks taken in ascending |a|, of the chunk's |a|
                       mass and the mean squared logit change over ``samples`` draws of the
                       chunk alone replaced by uniform noise in [-1, 1] (theirs: 10, 3136)
max_sensitivity        max over ``samples`` draws of uniform noise in [-r, r] (r 0.02) of
                       ‖a(x + noise) − a(x)‖ / ‖a(x)‖ (theirs: 10 samples)
focus                  on a 2×2 mosaic, the share of positive relevance that falls in the
                       target's tiles (theirs: 500 mosaics)
====================  =================================================================
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
