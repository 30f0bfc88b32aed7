"""Attribution methods composed with the pullback: SoftGated(model) under Captum's methods."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, snapshot, tiny_cnn
from torch import nn

import pullbacks

captum = pytest.importorskip("captum")
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency  # noqa: E402

from pullbacks.evaluation.methods import Settings, attribute  # noqa: E402

D = torch.float64


@pytest.fixture
def net():
    return tiny_cnn(dtype=D)


def _x(n=2, seed=0):
    return torch.rand(n, 3, 12, 12, dtype=D, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_integrated_pullbacks_is_the_sum_of_pullbacks_on_the_straight_path(net):
    """Gauss-Legendre points and weights on [0, 1], as Captum's IntegratedGradients uses them."""
    x, t, steps = _x(), [1, 4], 8
    got = attribute(net, x, t, "integrated_pullbacks", Settings(ig_steps=steps))
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    by_hand = sum(w / 2 * pullbacks.excitation_pullback(net, (a + 1) / 2 * x, t) for a, w in zip(nodes, weights))
    # baseline 0: (x - 0) times the weighted mean pullback (Captum keeps its nodes to about 1e-8)
    torch.testing.assert_close(got, x * by_hand, rtol=1e-6, atol=1e-9 * by_hand.abs().max().item())
    ig = attribute(net, x, t, "integrated_gradients", Settings(ig_steps=steps))
    assert (got - ig).abs().max() > 1e-3 * ig.abs().max()  # not Integrated Gradients


def test_smooth_pullback_tends_to_the_pullback_as_sigma_goes_to_zero(net):
    x, t = _x(), [2, 3]
    got = attribute(net, x, t, "smooth_pullback", Settings(smoothgrad_sigma=1e-9, smoothgrad_samples=4))
    torch.testing.assert_close(got, pullbacks.excitation_pullback(net, x, t), rtol=1e-6, atol=1e-9)
    noisy = attribute(net, x, t, "smooth_pullback", Settings(smoothgrad_samples=4))
    plain = attribute(net, x, t, "smoothgrad", Settings(smoothgrad_samples=4))
    assert not torch.allclose(noisy, plain)  # the same noise, other gradients


def test_pullback_shap_differs_from_gradient_shap_and_is_seeded(net):
    x, t = _x(), [0, 5]
    a = attribute(net, x, t, "pullback_shap", Settings(shap_samples=4))
    assert torch.equal(a, attribute(net, x, t, "pullback_shap", Settings(shap_samples=4, batch_size=1)))
    assert not torch.allclose(a, attribute(net, x, t, "gradient_shap", Settings(shap_samples=4)))


def test_captum_inside_soft_gates_is_the_same_as_on_softgated(net):
    """The documented pattern: any gradient-based Captum method run inside soft_gates."""
    x, t = _x(), 3
    with pullbacks.soft_gates():
        inside = IntegratedGradients(net).attribute(x.clone().requires_grad_(), target=t, n_steps=6)
    wrapped = IntegratedGradients(pullbacks.SoftGated(net)).attribute(x.clone().requires_grad_(), target=t, n_steps=6)
    torch.testing.assert_close(inside, wrapped, rtol=1e-12, atol=1e-14)


def test_softgated_checks_every_forward_and_leaves_the_model_alone(net):
    before = snapshot(net)
    se = nn.Sequential(net, nn.Sigmoid(), nn.Linear(10, 3)).to(D).eval()  # an ordinary sigmoid on the path
    with pytest.warns(pullbacks.PartialPullbackWarning, match="1 call to sigmoid") as caught:
        NoiseTunnel(Saliency(pullbacks.SoftGated(se))).attribute(
            _x().requires_grad_(), nt_type="smoothgrad", nt_samples=3, target=0
        )
    assert len([w for w in caught if issubclass(w.category, pullbacks.PartialPullbackWarning)]) == 1  # once
    with pytest.raises(pullbacks.PartialPullbackError):
        Saliency(pullbacks.SoftGated(se, strict=True)).attribute(_x().requires_grad_(), target=0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4)).to(D).eval()
    with pytest.raises(ValueError, match="no call that pullbacks gates"):
        Saliency(pullbacks.SoftGated(linear)).attribute(_x().requires_grad_(), target=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pullbacks.PartialPullbackWarning)
        attribute(net, _x(), 1, "integrated_pullbacks", Settings(ig_steps=4))
    assert_unchanged(net, before)
