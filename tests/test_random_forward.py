"""Forward passes that draw random numbers are refused before they draw, with the fix, by the
pullback, the ascent, SoftGated and the evaluation; the RNG and the model are untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, snapshot
from torch import nn

import pullbacks
from pullbacks.core.randomness import RandomForwardError


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(F.dropout(F.relu(self.conv(x)), 0.5, training=True).flatten(1))


class DropPath(nn.Module):
    """Stochastic depth as timm and torchvision write it: a Bernoulli mask on the residual."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x):
        keep = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(0.8) / 0.8 if self.training else 1.0
        return self.fc((x + F.relu(self.conv(x)) * keep).flatten(1))


def _models():
    torch.manual_seed(0)
    path = DropPath()  # a module in training mode that check_model does not know
    return {"functional dropout": FunctionalDropout().eval(), "stochastic depth": path}


@pytest.mark.parametrize("name", ["functional dropout", "stochastic depth"])
def test_every_entry_point_refuses_a_random_forward_pass_before_it_draws(name):
    from pullbacks.evaluation.methods import Settings

    model = _models()[name]
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    calls = {
        "pullback": lambda: pullbacks.excitation_pullback(model, x, 1),
        "ascent": lambda: pullbacks.gradient_ascent(model, x, 1, steps=1),
        "gradient ascent": lambda: pullbacks.gradient_ascent(model, x, 1, steps=1, method="gradient"),
        "SoftGated": lambda: pullbacks.SoftGated(model)(x),
    }
    try:
        from pullbacks.evaluation import evaluate

        calls["evaluate"] = lambda: evaluate(
            model,
            x,
            [1],
            methods=["gradient"],
            metrics=["faithfulness_estimate"],
            settings=Settings(fe_features=64),
            progress=False,
        )
    except ImportError:
        pass
    for what, call in calls.items():
        before, rng = snapshot(model), torch.get_rng_state()
        with pytest.raises(RandomForwardError, match=r"draws random numbers .*call model\.eval\(\)"):
            call()
        assert torch.equal(torch.get_rng_state(), rng), what  # nothing was drawn
        assert_unchanged(model, before)


def test_a_model_in_eval_mode_with_zero_dropout_is_accepted():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)
    ).eval()
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    rng = torch.get_rng_state()
    a, b = pullbacks.excitation_pullback(model, x, 1), pullbacks.excitation_pullback(model, x, 1)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), rng)
    with pullbacks.soft_gates():
        F.dropout(x.requires_grad_(), 0.0, training=True)  # p = 0 draws nothing
