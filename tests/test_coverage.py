"""Coverage read off the autograd graph (docs/method.md, "Coverage"): whatever is not gated, on
the allowlist or a product is reported by name, at every entry point, and ``strict=True`` means
the same everywhere."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from helpers import timm_model
from torch import nn

import pullbacks
from pullbacks import PartialPullbackError, PartialPullbackWarning


class After(nn.Module):
    """conv → ReLU (gated) → the operator under test → linear."""

    def __init__(self, op):
        super().__init__()
        self.conv, self.op, self.head = nn.Conv2d(3, 4, 3), op, nn.LazyLinear(3)

    def forward(self, x):
        return self.head(self.op(F.relu(self.conv(x))).flatten(1))


def _net(op) -> nn.Module:
    torch.manual_seed(0)
    net = After(op)
    net(torch.rand(1, 3, 8, 8))  # the lazy head takes its shape
    return net.eval()


# the cases: an operator after the ReLU that a list of torch functions did not name
NAMED = {
    "expit": (torch.special.expit, "sigmoid"),
    "square": (torch.square, "pow"),
    "global max pool": (lambda h: h.amax((2, 3)), "amax"),
    "normalize": (F.normalize, "vector norm"),
    "abs": (torch.abs, "abs"),
    "log1p": (torch.log1p, "log1p"),
    "logsumexp": (lambda h: h.logsumexp(1), "logsumexp"),
    "local response norm": (nn.LocalResponseNorm(2), "pow"),
    "sin": (torch.sin, "sin"),
    "topk": (lambda h: h.flatten(1).topk(3).values, "topk"),
}
# held out: operators no line of the package names
HELD_OUT = {
    "cosh": torch.cosh,
    "atan": torch.atan,
    "erfinv": lambda h: torch.erfinv(torch.tanh(h) * 0.5),
    "expm1": torch.expm1,
    "cumprod": lambda h: h.cumprod(1),
    "prod": lambda h: h.prod(1),
    "max along a dimension": lambda h: h.max(1).values,
    "median": lambda h: h.median(1).values,
    "sort": lambda h: h.sort(1).values,
    "logit": lambda h: torch.logit(torch.sigmoid(h)),
    "softsign": F.softsign,
    "fmod": lambda h: torch.fmod(h, 0.3),
    "nan_to_num": torch.nan_to_num,
    "std": lambda h: h.std(1),
    "cdist": lambda h: torch.cdist(h.flatten(2), h.flatten(2)),
    "softplus(beta=2)": lambda h: F.softplus(h, beta=2.0),
    "atan2": lambda h: torch.atan2(h, h + 1),
    "torch.ops.aten.relu": torch.ops.aten.relu,
    "lerp": lambda h: torch.lerp(h, h.flip(1), torch.sigmoid(h)),
}


@pytest.mark.parametrize("case", list(NAMED))
def test_an_operator_after_the_relu_is_reported_by_name_and_strict_raises(case):
    op, name = NAMED[case]
    net = _net(op)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(PartialPullbackError, match=name) as e:
        with pullbacks.soft_gates(strict=True):
            net(x)
    assert e.value.coverage.gated == {"relu": 1} and e.value.coverage.ordinary[name] >= 1
    with pytest.warns(PartialPullbackWarning, match=name):  # the pullback: the same reading
        pullbacks.excitation_pullback(net, x.detach(), 0)


@pytest.mark.parametrize("case", list(HELD_OUT))
def test_held_out_operators_are_reported_too(case):
    net = _net(HELD_OUT[case])
    with pytest.raises(PartialPullbackError) as e:
        with pullbacks.soft_gates(strict=True):
            net(torch.rand(2, 3, 8, 8, requires_grad=True))
    assert not e.value.coverage.complete


def test_a_product_is_listed_on_its_own_and_strict_products_raises():
    net = _net(lambda h: h * h)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    with pullbacks.soft_gates(strict=True) as mode:
        out = net(x)
    assert mode.coverage.complete and mode.coverage.products == {"mul": 1}
    assert str(mode.coverage) == "gated: relu 1; ordinary: nothing; products: mul 1"
    assert out.shape == (2, 3)
    with pytest.raises(PartialPullbackError, match="products: mul 1"):
        with pullbacks.soft_gates(strict="products"):
            net(x)
    with pytest.raises(PartialPullbackError, match="products: mul 1"):
        pullbacks.excitation_pullback(net, x.detach(), 0, strict="products")
    with pytest.raises(TypeError, match="strict must be True, False or 'products'"):
        pullbacks.GateOptions(strict="yes")


def test_the_coverage_read_inside_the_block_and_at_its_exit_agree():
    net = _net(torch.abs)
    with pullbacks.soft_gates() as mode:
        out = net(torch.rand(1, 3, 8, 8, requires_grad=True))
        inside = str(mode.coverage)
    assert inside == str(mode.coverage) == "gated: relu 1; ordinary: abs 1"
    assert out.grad_fn is not None


class Scripted(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)
        inner = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.inner = torch.jit.script(inner) if how == "script" else torch.jit.trace(inner, torch.rand(1, 4, 6, 6))

    def forward(self, x):
        return self.head(self.inner(F.relu(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_submodule_is_reported_and_strict_raises(how):
    net = Scripted(how).eval()
    with pytest.raises(PartialPullbackError, match="TorchScript"):
        with pullbacks.soft_gates(strict=True):
            net(torch.rand(1, 3, 8, 8, requires_grad=True))


class Checkpointed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.body, self.head = (
            nn.Conv2d(3, 4, 3),
            nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()),
            nn.Linear(4, 3),
        )

    def forward(self, x):
        return self.head(cp.checkpoint(self.body, F.relu(self.conv(x)), use_reentrant=True).mean((2, 3)))


def test_a_reentrant_checkpoint_is_reported_in_a_block_and_refused_by_the_pullback():
    net = Checkpointed().eval()
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    with pytest.raises(PartialPullbackError, match="a checkpoint's recompute"):
        with pullbacks.soft_gates(strict=True):
            net(x)
    with pullbacks.soft_gates() as mode:
        net(x)
    assert mode.coverage.ordinary["a checkpoint's recompute"] == 1 and not mode.coverage.complete
    with pytest.raises(RuntimeError, match="activation checkpointing"):
        pullbacks.excitation_pullback(net, x.detach(), 0)


@pytest.mark.slow
def test_edgenext_keeps_its_normalize_nodes_reported():
    model = timm_model("edgenext_xx_small")().eval()
    with pullbacks.soft_gates() as mode:
        model(torch.rand(1, 3, 64, 64, requires_grad=True))
    assert mode.coverage.ordinary["vector norm"] >= 6, mode.coverage


@pytest.mark.slow
def test_a_llama_under_reentrant_checkpointing_is_never_silently_vanilla():
    transformers = pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()  # checkpointing runs in train mode only; this config has no dropout
    embeds = torch.randn(1, 6, 32, requires_grad=True)
    with pytest.raises(PartialPullbackError, match="a checkpoint's recompute"):
        with pullbacks.soft_gates(strict=True):
            model(inputs_embeds=embeds).logits[0, -1, 3]


@pytest.mark.parametrize("function", [F.softmax, F.normalize, torch.cumsum])
def test_a_gate_rule_for_an_operator_that_mixes_entries_is_refused_naming_the_rule(function):
    rule = pullbacks.GateRule("mixer", (function,), lambda z, t: torch.sigmoid(z / t), temperature=1.0)
    z = torch.randn(2, 5, requires_grad=True)
    with pytest.raises(TypeError, match=r"GateRule\('mixer'\) was applied to .*not elementwise.*SoftenedRule"):
        with pullbacks.soft_gates(rules=[rule]):
            function(z, 1) if function is not F.normalize else function(z)


def test_an_elementwise_gate_rule_with_per_channel_parameters_is_accepted():
    rule = pullbacks.GateRule("prelu", (F.prelu,), lambda z, t: torch.sigmoid(z / t), temperature=1.0)
    z = torch.randn(2, 3, 4, requires_grad=True)
    with pullbacks.soft_gates(rules=[rule]) as mode:
        y = F.prelu(z, torch.tensor([0.1, 0.2, 0.3]).view(3, 1).squeeze(1))
    assert mode.coverage.gated == {"prelu": 1} and torch.equal(y, F.prelu(z, torch.tensor([0.1, 0.2, 0.3])))
