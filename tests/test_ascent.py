"""gradient_ascent(): the geometry of docs/method.md, "The ascent"."""

import pytest
import torch
from helpers import tiny_cnn

import pullbacks


def cnn():
    return tiny_cnn(classes=5)


X = torch.rand(3, 3, 16, 16) * 1.6 - 0.8


def norms(t):
    return t.flatten(1).norm(dim=1)


@pytest.mark.parametrize("method", ["pullback", "gradient"])
def test_unprojected_unclipped_steps_have_length_alpha(method):
    m = cnn()
    one = pullbacks.gradient_ascent(m, X, 1, steps=1, alpha=2.5, eps=None, clip=None, method=method)
    torch.testing.assert_close(norms(one - X), torch.full((3,), 2.5))
    two = pullbacks.gradient_ascent(m, X, 1, steps=2, alpha=2.5, eps=None, clip=None, method=method)
    step2 = two - one
    torch.testing.assert_close(norms(step2), torch.full((3,), 2.5))


def test_first_step_is_along_the_pullback():
    m = cnn()
    one = pullbacks.gradient_ascent(m, X, 4, steps=1, alpha=1.0, eps=None, clip=None, temperature=0.5)
    d = pullbacks.excitation_pullback(m, X, 4, temperature=0.5)
    torch.testing.assert_close(one - X, d / norms(d)[:, None, None, None])


def test_projection_and_clipping():
    m = cnn()
    out = pullbacks.gradient_ascent(m, X, 2, steps=4, alpha=3.0, eps=4.0, clip=None)
    assert torch.all(norms(out - X) <= 4.0 + 1e-4)
    torch.testing.assert_close(norms(out - X), torch.full((3,), 4.0))  # binds: 4 steps of 3 > 4
    x = X * 0.5  # inside the clip range
    out = pullbacks.gradient_ascent(m, x, 2, steps=3, alpha=20.0, clip=(-0.5, 0.5))
    assert out.min() >= -0.5 and out.max() <= 0.5 and out.min() == -0.5


def test_target_logit_goes_up():
    m = cnn()
    for method in ("pullback", "gradient"):
        out = pullbacks.gradient_ascent(m, X, [0, 3, 4], steps=3, alpha=1.0, method=method)
        with torch.no_grad():
            before, after = m(X), m(out)
        idx = torch.tensor([[0], [3], [4]])
        assert torch.all(after.gather(1, idx) > before.gather(1, idx))


def test_batch_independence():
    m, x = cnn().double(), X.double()
    batch = pullbacks.gradient_ascent(m, x, [0, 3, 4], steps=3)
    for i, t in enumerate([0, 3, 4]):
        alone = pullbacks.gradient_ascent(m, x[i : i + 1], t, steps=3)
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-10, atol=1e-12)


def test_inputs_untouched_and_output_detached():
    x = X.clone().requires_grad_(True)
    out = pullbacks.gradient_ascent(cnn(), x, 0, steps=2)
    assert torch.equal(x.detach(), X) and x.grad is None and not out.requires_grad


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(alpha=0), "alpha"),
        (dict(eps=-1.0), "eps"),
        (dict(clip=(1.0, -1.0)), "clip"),
        (dict(clip="x"), "clip"),
        (dict(method="lrp"), "method"),
        (dict(temperature=0), "temperature"),
    ],
)
def test_bad_arguments(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        pullbacks.gradient_ascent(cnn(), X, 0, **kw)
