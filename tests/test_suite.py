"""The follow-up's metrics against Quantus 0.6.0 (its source is the definition) or closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

import reference_metrics as R  # noqa: E402

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
    """A Quantus metric on the 3-channel attributions (the follow-up's ``reduce_axes=()``)."""
    assert a.shape == x.shape
    return np.array(
        metric(
            model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(), device="cpu", channel_first=True, **kw
        )
    )


def test_faithfulness_estimate_is_quantus_on_every_entry():
    model, (x, t, a) = _model(), _batch()
    ours = suite.faithfulness_estimate(model, x, t, {"m": a}, features=16, baseline=0.0)["m"]
    theirs = _quantus(
        quantus.FaithfulnessEstimate(features_in_step=16, perturb_baseline=0.0, abs=True, disable_warnings=True),
        model,
        x,
        t,
        a,
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(ours) <= 1) and np.ptp(ours) > 0
    summed = suite.faithfulness_estimate(model, x, t, {"m": a.sum(1, keepdim=True).expand_as(a)}, features=16)["m"]
    assert not np.allclose(summed, ours, atol=1e-3)  # a channel-summed map is another map


def test_monotonicity_correlation_is_quantus_with_a_constant_baseline():
    model, (x, t, a) = _model(), _batch()
    for softmax in (True, False):  # Quantus' default and the follow-up's: probabilities; logits: a variant
        ours = suite.monotonicity_correlation(
            model, x, t, {"m": a}, [0, 1, 2], features=16, samples=3, baseline=0.5, softmax=softmax
        )["m"]
        theirs = _quantus(
            quantus.MonotonicityCorrelation(
                nr_samples=3, features_in_step=16, perturb_baseline=0.5, abs=True, disable_warnings=True
            ),
            model,
            x,
            t,
            a,
            softmax=softmax,
        )
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    default = suite.monotonicity_correlation(model, x, t, {"m": a}, [0, 1, 2], features=16, samples=3, baseline=0.5)
    np.testing.assert_array_equal(
        default["m"],
        suite.monotonicity_correlation(
            model, x, t, {"m": a}, [0, 1, 2], features=16, samples=3, baseline=0.5, softmax=True
        )["m"],
    )


def test_monotonicity_noise_is_one_value_per_chunk_and_depends_on_the_seed_not_the_batch(monkeypatch):
    model, (x, t, a) = _model(), _batch()
    whole = suite.monotonicity_correlation(model, x, t, {"m": a}, [7, 8, 9], features=16, samples=3)["m"]
    alone = suite.monotonicity_correlation(model, x[1:2], t[1:2], {"m": a[1:2]}, [8], features=16, samples=3)["m"]
    assert whole[1] == alone[0]
    other = suite.monotonicity_correlation(model, x[1:2], t[1:2], {"m": a[1:2]}, [99], features=16, samples=3)["m"]
    assert other[0] != alone[0]
    seen = []
    real = suite._target_outputs
    monkeypatch.setattr(suite, "_target_outputs", lambda m, xs, *args: seen.append(xs.clone()) or real(m, xs, *args))
    suite.monotonicity_correlation(model, x[:1], t[:1], {"m": a[:1]}, [8], features=16, samples=3)
    moved = seen[-1].flatten(1) != x[:1].flatten(1)
    for row, changed in zip(seen[-1].flatten(1), moved):  # 16 entries replaced by one value each time
        assert changed.sum() == 16 and row[changed].unique().numel() == 1


def test_max_sensitivity_is_quantus_with_the_same_draws():
    model, (x, t, _) = _model(), _batch(2)
    x = x * 0.9  # away from the clip range, so that no noisy entry is clamped

    def gradient(method, xs, targets):
        xs = xs.clone().requires_grad_()
        model(xs)[torch.arange(xs.shape[0]), targets].sum().backward()
        return (xs.grad * xs).detach()  # input × gradient: changes with the input

    ours, noises = [], []
    for i in range(2):
        a = gradient("m", x[i : i + 1], t[i : i + 1])
        ours.append(
            suite.max_sensitivity(
                x[i : i + 1],
                {"m": a},
                lambda m, xs, i=i: gradient(m, xs, t[i].expand(xs.shape[0])),
                [10 + i],
                samples=4,
                radius=0.02,
            )["m"][0]
        )
        g = torch.Generator().manual_seed(10 + i)
        noises.append((torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1) * 0.02)
    for i in range(2):
        step = iter(range(4))

        def same_draws(arr, indices, **kw):  # Quantus adds our noise instead of its own
            k = next(step)
            return (torch.from_numpy(arr).view(1, 3, 8, 8) + noises[i][k].float()).reshape(1, -1).numpy()

        def explain(model, inputs, targets, **kw):
            return gradient("m", torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

        theirs = _quantus(
            quantus.MaxSensitivity(nr_samples=4, perturb_func=same_draws, disable_warnings=True),
            model,
            x[i : i + 1],
            t[i : i + 1],
            gradient("m", x[i : i + 1], t[i : i + 1]),
            explain_func=explain,
        )
        assert ours[i] == pytest.approx(float(theirs[0]), rel=1e-5)


def test_max_sensitivity_closed_form_on_a_linear_model():
    w = torch.randn(5, 3 * 8 * 8, generator=torch.Generator().manual_seed(2))
    x, t, _ = _batch(2)
    x = x * 0.9

    def input_x_gradient(method, xs):  # for f(x) = w x the gradient is w[t] everywhere
        return xs * w[t[0]].view(3, 8, 8)

    a = input_x_gradient("m", x[:1])
    got = suite.max_sensitivity(x[:1], {"m": a}, input_x_gradient, [5], samples=4, radius=0.02)["m"][0]
    g = torch.Generator().manual_seed(5)
    noise = (torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1) * 0.02
    wt = w[t[0]].view(3, 8, 8).double()
    want = max(float((noise[k] * wt).norm() / (x[0].double() * wt).norm()) for k in range(4))  # every entry
    assert got == pytest.approx(want, rel=1e-5)
    constant = suite.max_sensitivity(
        x[:1], {"g": wt[None].float()}, lambda m, xs: wt.float().expand(xs.shape[0], -1, -1, -1), [5], samples=4
    )["g"][0]
    assert constant == 0.0  # the gradient of a linear model does not move


def test_focus_hand_computed_on_the_input_attribution_product():
    x = torch.ones(2, 3, 4, 4)
    x[0, 1] = -1.0  # channel 1 of image 0 flips the sign of the product
    a = torch.zeros(2, 3, 4, 4)
    a[0, :, :2, :2] = 1.0  # x ⊙ a: +1 in channels 0 and 2, -1 in channel 1 (clipped to 0) on the top-left tile
    a[0, 1, 2:, 2:] = -2.0  # x ⊙ a = +2 in channel 1 on the bottom-right tile
    a[1] = -1.0  # no positive relevance at all
    got = suite.focus({"m": a}, [(True, False, False, False), (True, True, False, False)], x)["m"]
    # image 0: top-left 2 channels × 4 pixels × 1 = 8; bottom-right 1 channel × 4 pixels × 2 = 8
    np.testing.assert_allclose(got, [8 / (16 + 1e-9), 0.0])
    theirs = np.array(
        quantus.Focus(disable_warnings=True, normalise=False)(
            model=_model(),
            x_batch=x.numpy(),
            y_batch=np.array([0, 0]),
            a_batch=(x * a).numpy(),
            device="cpu",
            custom_batch=[(1, 0, 0, 0), (1, 1, 0, 0)],
            channel_first=True,
        )
    )
    np.testing.assert_allclose(got, theirs, rtol=1e-7)  # Quantus in float32


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


def test_infidelity_is_zero_for_the_exact_gradient_of_a_linear_model_with_channel_varying_weights():
    torch.manual_seed(0)
    w = torch.randn(10, 192, dtype=torch.float64)  # weights differ across the channels, no bias
    model = _linear(w)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    g = w[3].view(1, 3, 8, 8)
    maps = {"g": g, "scaled": -3 * g, "summed": g.sum(1, keepdim=True).expand_as(g), "zeros": 0 * g}
    for cumulative in (True, False):
        s = suite.infidelity(model, x, torch.tensor([3]), maps, [0], patches=(4, 2), draws=2, cumulative=cumulative)
        assert abs(s["g"][0]) < 1e-10 and abs(s["scaled"][0]) < 1e-10  # b_I = <w, I> = a_I: rounding only
        assert s["summed"][0] > 0.1 and s["zeros"][0] > s["summed"][0] * 0.5  # a channel sum predicts less
    assert s["zeros"][0] > 1.0


def test_infidelity_is_the_definition_one_perturbation_at_a_time():
    model, (x, t, a) = _model(), _batch()
    got = suite.infidelity(model, x, t, {"m": a}, [3, 4, 5], patches=(4, 3), draws=2, batch=5)["m"]
    want = [R.infidelity(model, x[i], int(t[i]), a[i], s, (4, 3), 2) for i, s in enumerate([3, 4, 5])]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    alone = suite.infidelity(model, x[2:], t[2:], {"m": a[2:]}, [5], patches=(4, 3), draws=2, batch=64)["m"]
    assert alone[0] == pytest.approx(got[2], rel=1e-5)  # neither the batch nor the neighbours matter
    single = suite.infidelity(model, x, t, {"m": a}, [3, 4, 5], patches=(4, 3), draws=2, cumulative=False)["m"]
    want = [R.infidelity(model, x[i], int(t[i]), a[i], s, (4, 3), 2, False) for i, s in enumerate([3, 4, 5])]
    np.testing.assert_allclose(single, want, rtol=1e-4)
    assert not np.allclose(single, got, rtol=1e-2)


def test_infidelity_is_quantus_for_one_draw_and_one_patch_size():
    # Quantus' Infidelity carries the earlier patches forward and fits no scale; with one draw
    # and one patch size, its loss given the optimal scale is ours (cumulative, the default)
    def optimal_mse(a, b, batched=True, **kw):  # Quantus calls loss(a=pred_deltas, b=a_sums)
        beta = (a * b).sum(-1, keepdims=True) / (b * b).sum(-1, keepdims=True)
        return ((beta * b - a) ** 2).mean(-1)

    model, (x, t, a) = _model(), _batch()
    for p in (4, 2):
        ours = suite.infidelity(model, x, t, {"m": a}, [0, 1, 2], patches=(p,), draws=1, baseline=0.5)["m"]
        theirs = _quantus(
            quantus.Infidelity(
                perturb_baseline=0.5,
                perturb_patch_sizes=[p],
                n_perturb_samples=1,
                loss_func=optimal_mse,
                abs=False,
                normalise=False,
                disable_warnings=True,
            ),
            model,
            x,
            t,
            a,
        )
        np.testing.assert_allclose(ours, theirs, rtol=1e-4)


# ---------------------------------------------------------------------------- faithfulness correlation


def test_faithfulness_correlation_hand_computed_over_every_patch():
    # one channel, 2×2 pixels, patch 1: four patches; the drops are w * x = [1, 2, 3, -4]
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    model, x, t = (
        _linear(w),
        torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64).view(1, 1, 2, 2),
        torch.tensor([0]),
    )
    ixg = w.view(1, 1, 2, 2) * x
    other = torch.tensor([2.0, -4.0, 6.0, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    s = suite.faithfulness_correlation(model, x, t, {"ixg": ixg, "other": other}, patch=1)
    # abs=True: |ixg| = [1, 2, 3, 4]; deviations [-1.5, -.5, .5, 1.5] and [.5, 1.5, 2.5, -4.5]: -7 / sqrt(5 * 29)
    assert s["ixg"][0] == pytest.approx(-7 / np.sqrt(145))
    assert s["other"][0] == pytest.approx(np.corrcoef([2, 4, 6, 1], [1, 2, 3, -4])[0, 1])


def test_faithfulness_correlation_sums_magnitudes_over_the_channels():
    w = torch.ones(1, 2 * 2 * 2, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    model, x, t = _linear(w), torch.rand(1, 2, 2, 2, generator=g, dtype=torch.float64) + 0.5, torch.tensor([0])
    noise = torch.randn(2, 2, generator=g, dtype=torch.float64) * 10
    cancel = torch.stack([noise, -noise + torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)])[None]
    # Σ_c |a_c| per patch follows the noise (the channel sum Σ_c a_c = [0, 1, 2, 3] would not); drops are Σ_c x
    got = suite.faithfulness_correlation(model, x, t, {"m": cancel}, patch=1)["m"][0]
    masses = cancel[0].abs().sum(0).flatten().numpy()
    assert got == pytest.approx(np.corrcoef(masses, x[0].sum(0).flatten().numpy())[0, 1])
    assert got != pytest.approx(np.corrcoef([0, 1, 2, 3], x[0].sum(0).flatten().numpy())[0, 1], abs=1e-3)


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
    theirs = _quantus(
        quantus.RandomLogit(num_classes=2, similarity_func=correlation_pearson, disable_warnings=True),
        model,
        x,
        t,
        a,
        explain_func=explain_func,
        explain_func_kwargs={"method": "gradient", "reduce": None},
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert np.all(np.abs(ours) < 1)


# ---------------------------------------------------------------------------- against known evidence


def _evidence():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64)  # channels that differ, signs that cancel
    masks = torch.zeros(4, 6, 6, dtype=torch.bool)
    masks[0, :2, :3] = True
    masks[1, 3:, 3:] = True
    masks[2, 1, 1] = True
    masks[3, :, 0] = True
    return a, masks


def test_ground_truth_metrics_are_quantus_on_the_channel_sum():
    a, masks = _evidence()
    h = a.sum(1, keepdim=True)
    x, y = np.zeros((4, 1, 6, 6), dtype=np.float64), np.zeros(4, dtype=int)
    s = masks[:, None].numpy().astype(float)

    def q(metric, heat):
        return np.array(metric(model=None, x_batch=x, y_batch=y, a_batch=heat.numpy(), s_batch=s, channel_first=True))

    mass = suite.relevance_mass_accuracy({"m": a}, masks)["m"]
    np.testing.assert_allclose(
        mass, q(quantus.RelevanceMassAccuracy(disable_warnings=True, normalise=False), h.clamp(min=0)), rtol=1e-12
    )
    rank = suite.relevance_rank_accuracy({"m": a}, masks)["m"]
    np.testing.assert_allclose(rank, q(quantus.RelevanceRankAccuracy(disable_warnings=True, normalise=False), h))
    hit = suite.pointing_game({"m": a}, masks)["m"]
    np.testing.assert_allclose(hit, q(quantus.PointingGame(disable_warnings=True, normalise=False), h))
    summed_abs = suite.relevance_mass_accuracy({"m": a.abs()}, masks)["m"]
    assert not np.allclose(summed_abs, mass)  # h is the signed channel sum, clipped after the sum


def test_ground_truth_metrics_closed_forms():
    a = torch.zeros(3, 3, 4, 4)
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # K = 4 pixels
    a[0, 0, :2, :2] = 1.0  # all relevance on the mask
    a[0, 1, 3, 3] = -5.0  # negative relevance off the mask does not count in mass
    a[1, 2] = torch.arange(16.0).view(4, 4)  # largest at the bottom right: off the mask
    a[2] = -1.0  # nothing positive: mass undefined; ties everywhere
    mass = suite.relevance_mass_accuracy({"m": a}, masks)["m"]
    np.testing.assert_allclose(mass[:2], [1.0, (0 + 1 + 4 + 5) / sum(range(16))])
    assert np.isnan(mass[2])
    # a constant map: the first K pixels in row-major order, two of them in the mask
    np.testing.assert_allclose(suite.relevance_rank_accuracy({"m": a}, masks)["m"], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(suite.pointing_game({"m": a}, masks)["m"], [1.0, 0.0, 1.0])  # a tie counts as a hit
