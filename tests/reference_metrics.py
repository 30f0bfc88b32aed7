"""The follow-up's seven metrics written out one perturbation at a time, in float64, for one
image ``x`` (C, H, W), its target ``t`` and one attribution ``a`` (C, H, W): the definitions of
docs/method.md ("Evaluation") as plain loops, to hold the vectorised ``suite`` against.

The uniform baseline's values are matched draws: ``torch.rand(K)`` from a generator seeded
with the image's seed, one value per perturbation, in the order the loops below visit them.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr


def _f(model, x, t, softmax=False):
    with torch.no_grad():
        out = model(x[None])
        return float((out.softmax(1) if softmax else out)[0, t])


def _draws(seed, count):
    return (torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1).tolist()


def _squares(h, w, p):
    return [(r, c) for r in range(0, h, p) for c in range(0, w, p)]


def infidelity(model, x, t, a, seed, patches, draws, cumulative=True):
    h, w = x.shape[-2:]
    values = iter(_draws(seed, draws * sum(len(_squares(h, w, p)) for p in patches)))
    fx, pairs = _f(model, x, t), []
    for _ in range(draws):
        for p in patches:
            xp = x.clone()
            for r, c in _squares(h, w, p):
                xp = xp.clone() if cumulative else x.clone()
                xp[:, r : r + p, c : c + p] = next(values)
                pairs.append((float((a * (x - xp)).sum()), fx - _f(model, xp, t)))
    beta = sum(ai * bi for ai, bi in pairs) / sum(ai * ai for ai, _ in pairs)
    return float(np.mean([(beta * ai - bi) ** 2 for ai, bi in pairs]))


def faithfulness_correlation(model, x, t, a, patch, baseline=0.0):
    fx, masses, drops = _f(model, x, t), [], []
    for r, c in _squares(*x.shape[-2:], patch):
        xp = x.clone()
        xp[:, r : r + patch, c : c + patch] = baseline
        masses.append(float(a[:, r : r + patch, c : c + patch].abs().sum()))
        drops.append(fx - _f(model, xp, t))
    return float(np.corrcoef(masses, drops)[0, 1])


def _ordered(a, descending):
    v = a.abs().flatten().tolist()
    return v, sorted(range(len(v)), key=lambda j: (-v[j] if descending else v[j], j))  # ties: entry order


def faithfulness_estimate(model, x, t, a, features, baseline=0.0):
    v, order = _ordered(a, descending=True)
    fx, masses, drops = _f(model, x, t), [], []
    for s in range(0, len(order), features):
        chunk = order[s : s + features]
        xp = x.flatten().clone()
        xp[chunk] = baseline
        masses.append(sum(v[j] for j in chunk))
        drops.append(fx - _f(model, xp.view_as(x), t))
    return float(np.corrcoef(masses, drops)[0, 1])


def monotonicity_correlation(model, x, t, a, seed, features, samples, eps=1e-12):
    v, order = _ordered(a, descending=False)
    starts = range(0, len(order), features)
    values = iter(_draws(seed, len(starts) * samples))
    p = _f(model, x, t, softmax=True)
    inv = 1 / p**2 if abs(p) >= eps else 1.0
    masses, changes = [], []
    for s in starts:
        chunk = order[s : s + features]
        moved = []
        for _ in range(samples):
            xp = x.flatten().clone()
            xp[chunk] = next(values)
            moved.append((p - _f(model, xp.view_as(x), t, softmax=True)) ** 2)
        masses.append(sum(v[j] for j in chunk))
        changes.append(np.mean(moved) * inv)
    return float(spearmanr(masses, changes).correlation)


def max_sensitivity(explain, x, a, seed, samples, radius):
    noise = torch.rand(samples, *x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    worst = 0.0
    for k in range(samples):
        moved = explain((x + noise[k] * radius).clamp(-1, 1))
        worst = max(worst, float((moved - a).norm() / a.norm()))
    return worst


def random_logit(a, b):
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def focus(x, a, target_tiles):
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    r = (x * a).clamp(min=0)
    tiles = [r[:, :h, :w], r[:, :h, w:], r[:, h:, :w], r[:, h:, w:]]
    return float(
        sum(float(tile.sum()) for tile, is_target in zip(tiles, target_tiles) if is_target) / (float(r.sum()) + 1e-9)
    )
