"""The follow-up's metrics against Quantus 0.6.0 (its source is the definition) or closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

from pullbacks.evaluation import suite  # noqa: E402


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()


def _batch(n=3):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    a = torch.randn(n, 3, 8, 8, generator=g)
    return x, torch.tensor([1, 3, 0][:n]), a


def _quantus(metric, model, x, t, a, **kw):
    return np.array(metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(),
                           a_batch=a.sum(1, keepdim=True).numpy(), device="cpu", channel_first=True, **kw))


def test_faithfulness_estimate_is_quantus():
    model, (x, t, a) = _model(), _batch()
    ours = suite.faithfulness_estimate(model, x, t, {"m": a}, features=16, baseline=0.0)["m"]
    theirs = _quantus(quantus.FaithfulnessEstimate(features_in_step=16, perturb_baseline=0.0, abs=True,
                                                   disable_warnings=True), model, x, t, a)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(ours) <= 1) and np.ptp(ours) > 0


def test_monotonicity_correlation_is_quantus_with_a_constant_baseline():
    model, (x, t, a) = _model(), _batch()
    for softmax in (False, True):  # logits (the follow-up's table), or Quantus' own default, probabilities
        ours = suite.monotonicity_correlation(model, x, t, {"m": a}, [0, 1, 2], features=16, samples=3,
                                              baseline=0.5, softmax=softmax)["m"]
        theirs = _quantus(quantus.MonotonicityCorrelation(nr_samples=3, features_in_step=16, perturb_baseline=0.5,
                                                          abs=True, disable_warnings=True), model, x, t, a,
                          softmax=softmax)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_monotonicity_noise_depends_on_the_seed_not_the_batch():
    model, (x, t, a) = _model(), _batch()
    whole = suite.monotonicity_correlation(model, x, t, {"m": a}, [7, 8, 9], features=16, samples=3)["m"]
    alone = suite.monotonicity_correlation(model, x[1:2], t[1:2], {"m": a[1:2]}, [8], features=16, samples=3)["m"]
    assert whole[1] == alone[0]
    other = suite.monotonicity_correlation(model, x[1:2], t[1:2], {"m": a[1:2]}, [99], features=16, samples=3)["m"]
    assert other[0] != alone[0]


def test_max_sensitivity_closed_form_on_a_linear_model():
    w = torch.randn(5, 3 * 8 * 8, generator=torch.Generator().manual_seed(2))
    x, t, _ = _batch(2)
    x = x * 0.9  # away from the clip range, so that no noisy pixel is clamped

    def input_x_gradient(method, xs):  # for f(x) = w x the gradient is w[t] everywhere
        return xs * w[t[0]].view(3, 8, 8)

    a = input_x_gradient("m", x[:1])
    got = suite.max_sensitivity(x[:1], {"m": a}, input_x_gradient, [5], samples=4, radius=0.02)["m"][0]
    g = torch.Generator().manual_seed(5)
    noise = (torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1) * 0.02
    wt = w[t[0]].view(3, 8, 8).double()
    want = max(float((noise[k] * wt).sum(0).norm() / (x[0].double() * wt).sum(0).norm()) for k in range(4))
    assert got == pytest.approx(want, rel=1e-5)
    constant = suite.max_sensitivity(x[:1], {"g": wt[None].float()}, lambda m, xs: wt.float().expand(xs.shape[0], -1, -1, -1),
                                     [5], samples=4)["g"][0]
    assert constant == 0.0  # the gradient of a linear model does not move


def test_focus_closed_form():
    a = torch.zeros(2, 3, 4, 4)
    a[0, :, :2, :2] = 1.0   # all positive relevance in the top-left tile
    a[0, :, 2:, 2:] = -5.0  # negative relevance does not count
    a[1] = 1.0              # spread evenly
    got = suite.focus({"m": a}, [(True, False, False, True), (True, True, False, False)])["m"]
    np.testing.assert_allclose(got, [1.0, 0.5])
