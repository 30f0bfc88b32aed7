"""excitation_pullback(): targets and bad input get clear errors."""

import math

import pytest
import torch
from torch import nn

import pullbacks


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


X = torch.rand(2, 4) * 2 - 1  # the [-1, 1] input space


def test_target_forms_agree():
    m = mlp()
    a = pullbacks.excitation_pullback(m, X, [2, 2])
    for t in (2, (2, 2), torch.tensor([2, 2]), torch.tensor(2), torch.tensor([2, 2], dtype=torch.int32)):
        assert torch.equal(pullbacks.excitation_pullback(m, X, t), a)


def test_per_sample_targets():
    m = mlp()
    both = pullbacks.excitation_pullback(m, X, [0, 1])
    torch.testing.assert_close(both[0], pullbacks.excitation_pullback(m, X[:1], 0)[0])
    torch.testing.assert_close(both[1], pullbacks.excitation_pullback(m, X[1:], 1)[0])
    assert not torch.allclose(both[0], pullbacks.excitation_pullback(m, X[:1], 1)[0])


def test_inputs_are_not_modified_and_get_no_grad():
    x = X.clone().requires_grad_(True)
    pullbacks.excitation_pullback(mlp(), x, 0)
    assert x.grad is None and torch.equal(x, X)


@pytest.mark.parametrize(
    "t,exc,msg",
    [
        (0, ValueError, "temperature"),
        (-1.0, ValueError, "temperature"),
        (math.inf, ValueError, "temperature"),
        (math.nan, ValueError, "temperature"),
        ("0.3", TypeError, "temperature"),
    ],
)
def test_bad_temperature(t, exc, msg):
    with pytest.raises(exc, match=msg):
        pullbacks.excitation_pullback(mlp(), X, 0, temperature=t)
    with pytest.raises(exc, match=msg):
        pullbacks.soft_gates(t).__enter__()


def test_bad_pool_temperature_gate_and_pool():
    with pytest.raises(ValueError, match="pool_temperature"):
        pullbacks.excitation_pullback(mlp(), X, 0, pool_temperature=0.0)
    with pytest.raises(ValueError, match="gate"):
        pullbacks.excitation_pullback(mlp(), X, 0, gate="tanh")
    with pytest.raises(ValueError, match="pool"):
        pullbacks.excitation_pullback(mlp(), X, 0, pool="avg")


@pytest.mark.parametrize(
    "targets,exc,msg",
    [
        (3, ValueError, "out of range.*3 classes"),
        (-1, ValueError, "out of range"),
        ([0, 1, 2], ValueError, "3 targets for a batch of 2"),
        ([0.5, 1.0], TypeError, "ints"),
        (torch.tensor([0.0, 1.0]), TypeError, "integer"),
        (True, TypeError, "bool"),
        (torch.zeros(2, 1, dtype=torch.long), ValueError, "1-D"),
        ("cat", TypeError, r"classes\.index"),
    ],
)
def test_bad_targets(targets, exc, msg):
    with pytest.raises(exc, match=msg):
        pullbacks.excitation_pullback(mlp(), X, targets)


def test_bad_inputs():
    m = mlp()
    with pytest.raises(ValueError, match="NaN or infinite"):
        pullbacks.excitation_pullback(m, torch.tensor([[0.0, math.nan, 0.0, 0.0]]), 0)
    with pytest.raises(TypeError, match="floating-point"):
        pullbacks.excitation_pullback(m, torch.ones(1, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="batch dimension"):
        pullbacks.excitation_pullback(m, torch.ones(4), 0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        pullbacks.excitation_pullback(m, [[0.0] * 4], 0)


def test_training_mode_is_refused_without_switching():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)).train()
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        pullbacks.excitation_pullback(m, X, 0)
    assert m.training and all(c.training for c in m.modules())
    m.eval()[3].train()  # a dropout in training mode is random
    with pytest.raises(ValueError, match="training mode"):
        pullbacks.gradient_ascent(m, X, 0)
    m.eval()[0].train()  # a Linear's flag changes nothing: accepted
    pullbacks.excitation_pullback(m, X, 0)


def test_model_without_gates_is_refused():
    linear = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    with pytest.raises(ValueError, match="no call that pullbacks gates"):
        pullbacks.excitation_pullback(linear, X, 0)
    with pytest.raises(ValueError, match="no call that pullbacks gates"):
        pullbacks.gradient_ascent(linear, X, 0)
    # a vanilla gradient is fine: one step of length 1 along the normalised gradient of logit 0
    out = pullbacks.gradient_ascent(linear, X, 0, method="gradient", steps=1, alpha=1.0, eps=None, clip=None)
    x = X.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(linear(x)[:, 0].sum(), x)
    torch.testing.assert_close(out, X + g / g.norm(dim=1, keepdim=True))
    with pytest.raises(TypeError, match="nn.Module"):
        pullbacks.excitation_pullback(lambda x: x, X, 0)


def test_works_under_no_grad():
    m = mlp()
    expected = pullbacks.excitation_pullback(m, X, 1)
    with torch.no_grad():
        torch.testing.assert_close(pullbacks.excitation_pullback(m, X, 1), expected)
        out = pullbacks.gradient_ascent(m, X, 1, steps=1, alpha=1.0, eps=None, clip=None)
    torch.testing.assert_close(out - X, expected / expected.norm(dim=1, keepdim=True))


@pytest.mark.slow  # over 2 s
def test_a_compiled_model_is_refused_with_the_way_out():
    m = mlp()
    compiled = torch.compile(m)
    with pytest.raises(TypeError, match=r"torch.compile.*_orig_mod"):
        pullbacks.excitation_pullback(compiled, X, 1)
    with pytest.raises(TypeError, match="torch.compile"):
        pullbacks.gradient_ascent(compiled, X, 1)
    torch.testing.assert_close(
        pullbacks.excitation_pullback(compiled._orig_mod, X, 1), pullbacks.excitation_pullback(m, X, 1)
    )
