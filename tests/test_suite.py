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


# ---------------------------------------------------------------------------- patches, infidelity


def test_blocks_tile_the_image_once_row_major_cut_at_the_border():
    assert len(suite.blocks(224, 224, 56)) == 16 and len(suite.blocks(224, 224, 112)) == 4
    cover = torch.zeros(10, 7, dtype=torch.long)
    squares = suite.blocks(10, 7, 4)
    for rows, cols in squares:
        cover[rows, cols] += 1
    assert len(squares) == 3 * 2 and (cover == 1).all()
    assert squares[1] == (slice(0, 4), slice(4, 7)) and squares[-1] == (slice(8, 10), slice(4, 7))


def _linear(w):
    """``f(x) = w x`` exactly: ``f(x) - f(x - I) = w · I`` for every perturbation."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(w.shape[1], w.shape[0], bias=False)).eval()
    with torch.no_grad():
        m[1].weight.copy_(w)
    return m.double()


def test_infidelity_is_zero_for_any_rescaled_gradient_of_a_linear_model():
    # the channel sum is what is scored: with equal weights across the channels, Σ_c a_c I_c = a Σ_c I_c
    g = torch.Generator().manual_seed(4)
    per_pixel = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    w = per_pixel.expand(2, 3, 8, 8).reshape(2, -1)
    model, x, t = _linear(w), torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1, torch.tensor([1, 0])
    grad = w[t].view_as(x)
    s = suite.infidelity(model, x, t, {"grad": grad, "scaled": -3 * grad, "ixg": x * grad}, [1, 2],
                         patches=(4, 3), draws=2)
    np.testing.assert_allclose(s["grad"], 0, atol=1e-10)  # rounding only: b_I ~ 1
    np.testing.assert_allclose(s["scaled"], 0, atol=1e-10)  # optimal scaling: any rescaling scores the same
    assert (s["ixg"] > 1e-3).all()


def _infidelity_reference(model, x, t, a, seed, patches, draws, cumulative=False):
    """One perturbation at a time, in float64: the definition as written (``cumulative``:
    each patch added to the earlier ones of its draw)."""
    g = torch.Generator().manual_seed(seed)
    h, w = x.shape[-2:]
    with torch.no_grad():
        fx = float(model(x[None])[0, t])
        ab, aa, bs = [], [], []
        for _ in range(draws):
            for p in patches:
                noise = torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 - 1
                xp = x.clone()
                for r in range(0, h, p):
                    for c in range(0, w, p):
                        xp = xp.clone() if cumulative else x.clone()
                        xp[:, r:r + p, c:c + p] = noise[:, r:r + p, c:c + p].to(x.dtype)
                        a_i = float((a.double().sum(0, keepdim=True) * (x - xp).double()).sum())
                        b_i = fx - float(model(xp[None])[0, t])
                        ab.append(a_i * b_i), aa.append(a_i * a_i), bs.append((a_i, b_i))
    beta = sum(ab) / sum(aa)
    return np.mean([(beta * a_i - b_i) ** 2 for a_i, b_i in bs])


def test_infidelity_is_the_definition_one_patch_at_a_time():
    model, (x, t, a) = _model(), _batch()
    got = suite.infidelity(model, x, t, {"m": a}, [3, 4, 5], patches=(4, 3), draws=2, batch=5)["m"]
    want = [_infidelity_reference(model, x[i], int(t[i]), a[i], s, (4, 3), 2) for i, s in enumerate([3, 4, 5])]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    alone = suite.infidelity(model, x[2:], t[2:], {"m": a[2:]}, [5], patches=(4, 3), draws=2, batch=64)["m"]
    assert alone[0] == pytest.approx(got[2], rel=1e-5)  # neither the batch nor the neighbours matter
    carried = suite.infidelity(model, x, t, {"m": a}, [3, 4, 5], patches=(4, 3), draws=2, cumulative=True)["m"]
    want = [_infidelity_reference(model, x[i], int(t[i]), a[i], s, (4, 3), 2, True) for i, s in enumerate([3, 4, 5])]
    np.testing.assert_allclose(carried, want, rtol=1e-4)
    assert not np.allclose(carried, got, rtol=1e-2)


def test_infidelity_is_quantus_for_one_draw_and_one_patch_size():
    # Quantus' Infidelity carries the earlier patches forward and fits no scale; with one draw
    # and one patch size, its loss given the optimal scale is ours with cumulative=True
    def optimal_mse(a, b, batched=True, **kw):  # Quantus calls loss(a=pred_deltas, b=a_sums)
        beta = (a * b).sum(-1, keepdims=True) / (b * b).sum(-1, keepdims=True)
        return ((beta * b - a) ** 2).mean(-1)

    model, (x, t, a) = _model(), _batch()
    for p in (4, 2):
        ours = suite.infidelity(model, x, t, {"m": a}, [0, 1, 2], patches=(p,), draws=1, cumulative=True,
                                baseline=0.5)["m"]
        theirs = _quantus(quantus.Infidelity(perturb_baseline=0.5, perturb_patch_sizes=[p], n_perturb_samples=1,
                                             loss_func=optimal_mse, abs=False, normalise=False, disable_warnings=True),
                          model, x, t, a)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4)


# ---------------------------------------------------------------------------- faithfulness correlation


def test_faithfulness_correlation_hand_computed_over_every_patch():
    # one channel, 2×2 pixels, patch 1: four patches; the drops are w * x = [1, 2, 3, -4]
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    model, x, t = _linear(w), torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64).view(1, 1, 2, 2), torch.tensor([0])
    ixg = (w.view(1, 1, 2, 2) * x)
    other = torch.tensor([2.0, -4.0, 6.0, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    s = suite.faithfulness_correlation(model, x, t, {"ixg": ixg, "other": other}, patch=1)
    # abs=True: |ixg| = [1, 2, 3, 4]; deviations [-1.5, -.5, .5, 1.5] and [.5, 1.5, 2.5, -4.5]: -7 / sqrt(5 * 29)
    assert s["ixg"][0] == pytest.approx(-7 / np.sqrt(145))
    assert s["other"][0] == pytest.approx(np.corrcoef([2, 4, 6, 1], [1, 2, 3, -4])[0, 1])


def test_faithfulness_correlation_sums_channels_before_the_magnitude():
    w = torch.ones(1, 2 * 2 * 2, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    model, x, t = _linear(w), torch.rand(1, 2, 2, 2, generator=g, dtype=torch.float64) + 0.5, torch.tensor([0])
    noise = torch.randn(2, 2, generator=g, dtype=torch.float64) * 10
    cancel = torch.stack([noise, -noise + torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)])[None]
    # Σ_c a = [0, 1, 2, 3] whatever the noise (|a_c| summed would follow the noise); the drops are Σ_c x
    got = suite.faithfulness_correlation(model, x, t, {"m": cancel}, patch=1)["m"][0]
    assert got == pytest.approx(np.corrcoef([0, 1, 2, 3], x[0].sum(0).flatten().numpy())[0, 1])


# ---------------------------------------------------------------------------- random logit


def test_random_classes_skip_the_target_and_follow_the_seed_alone():
    t = torch.full((2000,), 3)
    drawn = suite.random_classes(t, range(2000), 5)
    counts = np.bincount(drawn.numpy(), minlength=5)
    assert counts[3] == 0 and all(400 < c < 600 for i, c in enumerate(counts) if i != 3)
    assert int(suite.random_classes(t[:1], [1234], 5)[0]) == int(drawn[1234])
    with pytest.raises(ValueError, match="at least 2 classes"):
        suite.random_classes(t[:1], [0], 1)


def test_random_logit_is_quantus_with_two_classes():
    # with two classes the other class is forced, so Quantus's own draw is ours
    from quantus.functions.similarity_func import correlation_pearson

    from pullbacks.evaluation import attribute
    from pullbacks.evaluation.quantus import explain_func

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()
    x, _, _ = _batch()
    t = torch.tensor([1, 0, 1])
    a = attribute(model, x, t, "gradient")
    other = suite.random_classes(t, [0, 1, 2], 2)
    assert other.tolist() == [0, 1, 0]
    ours = suite.random_logit({"gradient": a}, lambda m, c: attribute(model, x, c, m), other)["gradient"]
    theirs = _quantus(quantus.RandomLogit(num_classes=2, similarity_func=correlation_pearson, disable_warnings=True),
                      model, x, t, a, explain_func=explain_func, explain_func_kwargs={"method": "gradient"})
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert np.all(np.abs(ours) < 1)
