"""The seven metrics of the follow-up on a tiny float64 ReLU/max-pool CNN with 64-pixel
images (the 224-pixel layouts scaled: patches 32 and 16, chunks of 256 entries) equal the
loop-by-loop definitions of ``reference_metrics`` for the gradient, input × gradient and a
random map."""

from __future__ import annotations

import numpy as np
import pytest
import reference_metrics as R
import torch
from torch import nn

from pullbacks.evaluation import suite

SEEDS = [11, 12]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(6 * 16 * 16, 10),
        )
        .double()
        .eval()
    )
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.tensor([2, 7])

    def explain(method, xs, targets):
        if method == "random":  # a map that ignores the input, one per class
            return torch.stack(
                [
                    torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(100 + int(c)), dtype=torch.float64)
                    for c in targets
                ]
            )
        xs = xs.clone().requires_grad_()
        (grad,) = torch.autograd.grad(model(xs)[torch.arange(xs.shape[0]), targets].sum(), xs)
        return grad if method == "gradient" else grad * xs.detach()

    maps = {m: explain(m, x, t) for m in ("gradient", "input_x_gradient", "random")}
    # ties across chunks: four levels of |a|, so the order within a level decides the chunks
    maps["tied"] = torch.randint(-2, 3, x.shape, generator=g).double()
    return model, x, t, maps, explain


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_infidelity(setup):
    model, x, t, maps, _ = setup
    got = suite.infidelity(model, x, t, maps, SEEDS, patches=(32, 16), draws=2)
    for m, a in maps.items():
        _close(got[m], [R.infidelity(model, x[i], int(t[i]), a[i], SEEDS[i], (32, 16), 2) for i in range(2)])


def test_faithfulness_correlation(setup):
    model, x, t, maps, _ = setup
    got = suite.faithfulness_correlation(model, x, t, maps, patch=16)
    for m, a in maps.items():
        _close(got[m], [R.faithfulness_correlation(model, x[i], int(t[i]), a[i], 16) for i in range(2)])


@pytest.mark.slow  # over 2 s
def test_faithfulness_estimate(setup):
    model, x, t, maps, _ = setup
    got = suite.faithfulness_estimate(model, x, t, maps, features=256)
    for m, a in maps.items():
        _close(got[m], [R.faithfulness_estimate(model, x[i], int(t[i]), a[i], 256) for i in range(2)])


@pytest.mark.slow  # over 2 s
def test_monotonicity_correlation(setup):
    model, x, t, maps, _ = setup
    got = suite.monotonicity_correlation(model, x, t, maps, SEEDS, features=256, samples=2)
    for m, a in maps.items():
        _close(got[m], [R.monotonicity_correlation(model, x[i], int(t[i]), a[i], SEEDS[i], 256, 2) for i in range(2)])


def test_max_sensitivity(setup):
    model, x, t, maps, explain = setup
    for m, a in maps.items():
        got = [
            suite.max_sensitivity(
                x[i : i + 1],
                {m: a[i : i + 1]},
                lambda m, xs, i=i: explain(m, xs, t[i].expand(xs.shape[0])),
                [SEEDS[i]],
                samples=3,
                radius=0.02,
            )[m][0]
            for i in range(2)
        ]
        _close(
            got,
            [
                R.max_sensitivity(lambda xs, i=i: explain(m, xs[None], t[i : i + 1])[0], x[i], a[i], SEEDS[i], 3, 0.02)
                for i in range(2)
            ],
        )


def test_random_logit(setup):
    model, x, t, maps, explain = setup
    other = suite.random_classes(t, SEEDS, 10)
    got = suite.random_logit(maps, lambda m, c: explain(m, x, c), other)
    for m, a in maps.items():
        _close(got[m], [R.random_logit(a[i], explain(m, x[i : i + 1], other[i : i + 1])[0]) for i in range(2)])


def test_focus(setup):
    _, x, _, maps, _ = setup
    tiles = [(True, False, False, True), (False, True, True, False)]
    got = suite.focus(maps, tiles, x)
    for m, a in maps.items():
        _close(got[m], [R.focus(x[i], a[i], tiles[i]) for i in range(2)])
