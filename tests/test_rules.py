"""Every rule of the table against a slow reference, one line each; rules users write.

The references are written from the formulas of docs/method.md, by another mechanism than
the package: straight-through expressions (``value.detach() + S - S.detach()``) that
autograd differentiates. A new built-in rule is tested by adding one line to ``GATES``
(elementwise) or ``SOFTENED`` (anything else); ``test_every_function_has_a_reference``
fails until it is there.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from reference import ref_soft_pool, straight_through
from reference_beyond import _attention, _group_norm, _layer_norm
from torch import Tensor, nn

import pullbacks
from pullbacks.core.policy import PartialPullbackError, PartialPullbackWarning
from pullbacks.core.rules.base import GateRule, SoftenedRule
from pullbacks.core.table import BUILTIN, default_temperatures, markdown, table

T = 0.7  # not a default of any family: the temperature must reach the rule
_nn = torch._C._nn


def sig(u: Tensor) -> Tensor:
    return 1 / (1 + torch.exp(-u))


def phi(u: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(u / math.sqrt(2)))


# the soft derivative of each elementwise function at its input z (in-place forms: the same
# name without the trailing underscore); default arguments of each function
GATES = {
    "relu": lambda z: sig(z / T),
    "relu6": lambda z: sig(z / T) * sig((6 - z) / T),
    "hardtanh": lambda z: sig((z + 1) / T) * sig((1 - z) / T),
    "leaky_relu": lambda z: 0.01 + 0.99 * sig(z / T),
    "silu": lambda z: sig(z / T),
    "gelu": lambda z: phi(z / T),
    "hardswish": lambda z: torch.clamp(z / T / 6 + 0.5, 0, 1),
    "mish": lambda z: torch.tanh(torch.log1p(torch.exp(z / T))),
}


def _rms(x, shape, w, eps):
    value = F.rms_norm(x, shape, w, eps)
    return straight_through(value, x / torch.sqrt(x.detach().pow(2).mean(-1, keepdim=True) + eps) * w)


def _pool(x):
    return straight_through(F.max_pool2d(x, 3, 2, 1), ref_soft_pool(x, 3, 2, 1, 1, False, T, "soft"))


def _mha_reference(x, w_in, b_in, w_out, b_out, heads=2):
    """Multi-head self-attention written out, with the softer softmax at scale / T."""
    n, b, e = x.shape
    q, k, v = F.linear(x, w_in, b_in).chunk(3, dim=-1)
    split = lambda t: t.reshape(n, b * heads, e // heads).transpose(0, 1)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    soft = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(e // heads) / T, dim=-1) @ v
    value = F.multi_head_attention_forward(
        x, x, x, e, heads, w_in, b_in, None, None, False, 0.0, w_out, b_out, training=False, need_weights=False
    )[0]
    return straight_through(value, F.linear(soft.transpose(0, 1).reshape(n, b, e), w_out, b_out))


def _mha(f, x, w_in, b_in, w_out, b_out):
    return f(x, x, x, 8, 2, w_in, b_in, None, None, False, 0.0, w_out, b_out, training=False, need_weights=False)[0]


def _randn(*shape):
    return lambda g: torch.randn(*shape, generator=g, dtype=torch.float64)


X4, X3 = _randn(2, 3, 7, 7), _randn(2, 4, 6)
# function name: (inputs, the call through the intercepted function f, the reference)
SOFTENED = {
    "max_pool2d": ((X4,), lambda f, x: f(x, 3, 2, 1), _pool),
    "max_pool2d_with_indices": ((X4,), lambda f, x: f(x, 3, 2, 1)[0], _pool),
    "layer_norm": (
        (X3, _randn(6), _randn(6)),
        lambda f, x, w, b: f(x, (6,), w, b, 1e-5),
        lambda x, w, b: _layer_norm(x, (6,), w, b, 1e-5),
    ),
    "group_norm": (
        (_randn(2, 4, 3, 3), _randn(4), _randn(4)),
        lambda f, x, w, b: f(x, 2, w, b, 1e-5),
        lambda x, w, b: _group_norm(x, 2, w, b, 1e-5),
    ),
    "rms_norm": ((X3, _randn(6)), lambda f, x, w: f(x, (6,), w, 1e-6), lambda x, w: _rms(x, (6,), w, 1e-6)),
    "scaled_dot_product_attention": (
        (_randn(2, 2, 5, 4),) * 3,
        lambda f, q, k, v: f(q, k, v),
        lambda q, k, v: _attention(T)(q, k, v),
    ),
    "multi_head_attention_forward": (
        (_randn(5, 2, 8), _randn(24, 8), _randn(24), _randn(8, 8), _randn(8)),
        _mha,
        _mha_reference,
    ),
}

FUNCTIONS = [
    (rule, f, inplace)
    for rule in BUILTIN
    for fs, inplace in ((rule.functions, False), (rule.inplace_functions, True))
    for f in fs
]


def _name(f) -> str:
    return f.__name__[:-1] if f.__name__.endswith("_") and not f.__name__.endswith("__") else f.__name__


def _options():
    return dict(temperature=T, pool_temperature=T, temperatures={k: T for k in default_temperatures()})


def test_every_function_has_a_reference():
    missing = [
        _name(f) for rule, f, _ in FUNCTIONS if _name(f) not in (GATES if isinstance(rule, GateRule) else SOFTENED)
    ]
    assert not missing, f"add a reference line for {missing}"


@pytest.mark.parametrize(
    "rule, function, inplace",
    FUNCTIONS,
    ids=[f"{r.family}-{getattr(f, '__module__', None) or 'Tensor'}.{f.__name__}" for r, f, _ in FUNCTIONS],
)
def test_rule_equals_its_reference_in_float64(rule, function, inplace):
    g = torch.Generator().manual_seed(0)
    if isinstance(rule, GateRule):
        z = (torch.randn(3, 50, generator=g, dtype=torch.float64) * 3).requires_grad_()
        w = torch.randn(3, 50, generator=g, dtype=torch.float64)
        with pullbacks.soft_gates(**_options()) as mode:
            y = function(z * 1.0)  # a non-leaf, so that in-place forms may overwrite it
        assert torch.equal(y.detach(), function(z.detach().clone()))  # the forward, bit for bit
        (got,) = torch.autograd.grad((w * y).sum(), z)
        expected = w * GATES[_name(function)](z.detach())
    else:
        inputs, call, reference = SOFTENED[_name(function)]
        xs = [make(g).requires_grad_() for make in inputs]
        with pullbacks.soft_gates(**_options()) as mode:
            y = call(function, *xs)
        ref = reference(*xs)
        assert torch.equal(y.detach(), ref.detach())  # the forward, bit for bit
        w = torch.randn(y.shape, generator=g, dtype=torch.float64)
        got = torch.autograd.grad((w * y).sum(), xs[0])[0]
        expected = torch.autograd.grad((w * ref).sum(), xs[0])[0]
    assert mode.coverage.gated[rule.family] >= 1 and not mode.coverage.ordinary
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_gate_rules_fast_forms_equal_their_gates():
    """Each built-in ``times`` (the fused form) is ``grad * gate``, with a fresh buffer or not."""
    g = torch.Generator().manual_seed(1)
    for rule in (r for r in BUILTIN if isinstance(r, GateRule)):
        z = torch.randn(200, generator=g, dtype=torch.float64) * 4
        grad = torch.randn(200, generator=g, dtype=torch.float64)
        for params in [("sigmoid",), ("normal_cdf",)] if rule.params and rule.family == "relu" else [()]:
            params = _params(rule, params)
            expected = grad * rule.gate(z, 0.8, *params)
            for fresh in (False, True):
                got = rule.backward(grad, z.clone(), 0.8, fresh, params)
                torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def _params(rule, gate):
    if rule.params is None:
        return ()
    defaults = {
        "relu": gate,
        "relu6": (0.0, 6.0, *gate),
        "hardtanh": (-1.0, 1.0, *gate),
        "leaky_relu": (0.01, *gate),
        "gelu": ("none",),
    }
    return defaults[rule.functions[0].__name__]


# --------------------------------------------------------------------------- rules users write


def elu_gate(z, t):
    s = torch.sigmoid(z / t)
    return s + (1 - s) * torch.exp(z.clamp(max=0))


ELU = GateRule("elu", (F.elu,), elu_gate, 0.5, doc="ELU: gate s + (1 - s) exp(min(z, 0))")


class ElusNet(nn.Module):
    """ELU as a module, in place, and as a functional call."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.act, self.act_ = nn.ELU(), nn.ELU(inplace=True)

    def forward(self, x):
        return self.c(F.elu(self.act_(self.b(self.act(self.a(x))))))


def _straight_through_elu(model, x, t):
    """The reference: F.elu patched by a straight-through surrogate with derivative elu_gate."""
    original = F.elu

    def elu(z, alpha=1.0, inplace=False):
        return straight_through(original(z), z * elu_gate(z, t).detach())

    x = x.clone().requires_grad_()
    F.elu = elu
    try:
        out = model(x)
    finally:
        F.elu = original
    return torch.autograd.grad(out[:, 1].sum(), x)[0]


@pytest.mark.parametrize("t", [None, 1.3])
def test_user_rule_equals_the_straight_through_reference(t):
    torch.manual_seed(0)
    model, x = ElusNet().double().eval(), torch.randn(3, 6, dtype=torch.float64)
    kw = {} if t is None else {"temperatures": {"elu": t}}
    got = pullbacks.excitation_pullback(model, x, 1, rules=[ELU], **kw)
    torch.testing.assert_close(got, _straight_through_elu(model, x, t or ELU.temperature), rtol=1e-12, atol=1e-14)
    with pullbacks.soft_gates(rules=[ELU]) as mode:
        model(x.clone().requires_grad_())
    assert mode.coverage.gated == {"elu": 3} and not mode.coverage.ordinary  # counted, not ordinary


def test_user_rule_temperature_and_options():
    torch.manual_seed(0)
    model, x = ElusNet().double().eval(), torch.randn(3, 6, dtype=torch.float64)
    o = pullbacks.GateOptions(rules=[ELU])
    assert o.temperatures["elu"] == 0.5 and o.temperature_of("elu") == 0.5 and o.rules == (ELU,)
    a = pullbacks.excitation_pullback(model, x, 1, o)
    b = pullbacks.excitation_pullback(model, x, 1, o.replace(temperatures={"elu": 2.0}))
    assert not torch.allclose(a, b)  # the temperature reaches the rule
    asc = pullbacks.gradient_ascent(model, x, 1, pullbacks.AscentOptions(rules=[ELU], clip=None, steps=1))
    x1 = x + 20 * a / a.flatten(1).norm(dim=1, keepdim=True)
    torch.testing.assert_close(asc, x1)
    with pytest.raises(ValueError, match="unknown family 'elu'.*known: silu"):
        pullbacks.GateOptions(temperatures={"elu": 1.0})  # without the rule, no such family
    assert "elu" not in o.replace(rules=()).temperatures  # dropping the rule drops its temperature
    with pytest.raises(TypeError, match="GateRule"):
        pullbacks.GateOptions(rules=[F.elu])


def test_without_the_rule_elu_is_ordinary_and_warns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ELU(), nn.Linear(8, 3)).double().eval()
    x = torch.randn(2, 6, dtype=torch.float64)
    with pytest.warns(PartialPullbackWarning, match="1 call to elu") as caught:
        pullbacks.excitation_pullback(model, x, 0)
    assert caught[0].message.coverage.ordinary == {"elu": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialPullbackWarning)
        pullbacks.excitation_pullback(model, x, 0, rules=[ELU])  # covered: no warning


def test_a_user_rule_overrides_a_built_in_family():
    half = GateRule("relu", (F.relu, torch.relu), lambda z, t: torch.full_like(z, 0.5))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2)).double().eval()
    x = torch.randn(2, 5, dtype=torch.float64)
    got = pullbacks.excitation_pullback(model, x, 0, rules=[half])
    w1, w2 = model[0].weight, model[2].weight
    torch.testing.assert_close(got, (0.5 * w2[0] @ w1).expand(2, 5))  # the network with every gate 1/2
    assert table((half,))[F.relu][0] is half and table()[F.relu][0] is not half


def test_soft_gates_strict_refuses_an_ordinary_sigmoid_at_exit():
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(PartialPullbackError, match="1 call to sigmoid") as e:
        with pullbacks.soft_gates(strict=True):
            torch.sigmoid(torch.relu(x))
    assert e.value.coverage.ordinary == {"sigmoid": 1} and e.value.coverage.gated == {"relu": 1}
    with pullbacks.soft_gates(strict=True) as mode:  # nothing ordinary: no error
        torch.relu(x)
    assert mode.coverage.complete


def test_options_cannot_be_changed():
    o = pullbacks.AscentOptions()
    t = o.temperatures
    for mutate in (
        lambda: t.__ior__({"gelu": 99}),
        lambda: t.update(gelu=99),
        lambda: t.__setitem__("gelu", 9),
        lambda: t.pop("gelu"),
        lambda: t.clear(),
        lambda: t.setdefault("x", 1),
    ):
        with pytest.raises(TypeError, match="frozen"):
            mutate()
    with pytest.raises(TypeError, match="frozen"):
        t |= {"gelu": 99}
    for name in ("temperature", "rules", "steps", "temperatures"):
        with pytest.raises(AttributeError):
            setattr(o, name, None)
    assert o.temperature_of("gelu") == 1.0 and isinstance(o.rules, tuple) and isinstance(o.clip, tuple)


def test_the_docs_table_is_the_rule_table():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text()
    assert markdown() in text, "docs/method.md's rule table differs from pullbacks.core.table.markdown()"


def test_rule_validation():
    with pytest.raises(ValueError, match="family"):
        GateRule("my elu", (F.elu,), elu_gate)
    with pytest.raises(TypeError, match="gate"):
        GateRule("elu", (F.elu,), None)
    with pytest.raises(ValueError, match="temperature"):
        GateRule("elu", (F.elu,), elu_gate, 0)
    with pytest.raises(ValueError, match="intercepts no function"):
        SoftenedRule("x", (), lambda call, mode: None)


# ----------------------------------------------------------------------------- rules users write, checked


class _Cube(torch.autograd.Function):
    """A user's own Function: forward z³, backward 3z² (exact)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z**3

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return 3 * g * z**2


def _cube_run(call, mode):  # the forward of torch.tanh stays; the backward is the cube's, scaled
    z = call.input
    value = call.func(*call.args, **call.kwargs)
    return value.detach() + _Cube.apply(z) - _Cube.apply(z).detach()


def test_a_user_softened_rule_with_its_own_function_is_gated_under_strict():
    rule = SoftenedRule("cube", (torch.tanh,), _cube_run, autograd=(_Cube,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2)).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pullbacks.soft_gates(strict=True, rules=[rule]) as mode:
        out = model(x.requires_grad_())
    assert mode.coverage.gated == {"relu": 1, "cube": 1} and mode.coverage.complete and out.shape == (3, 2)
    got = pullbacks.excitation_pullback(model, x.detach(), 1, rules=[rule], strict=True)
    # the same network by hand: the ReLU's sigmoid gate, then 3 z² for the tanh
    z1 = model[0](x.detach())
    z2 = model[2](torch.relu(z1))
    g2 = model[4].weight[1] * 3 * z2**2
    g1 = (g2 @ model[2].weight) * torch.sigmoid(z1 / 0.3)
    torch.testing.assert_close(got, g1 @ model[0].weight)
    undeclared = SoftenedRule("cube", (torch.tanh,), _cube_run)
    with pytest.raises(PartialPullbackError, match="autograd.Function _Cube.*declare it"):
        pullbacks.excitation_pullback(model, x.detach(), 1, rules=[undeclared], strict=True)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ELU(), nn.Linear(6, 2)).double().eval(), torch.randn(3, 4).double()


@pytest.mark.parametrize(
    "gate, problem",
    [
        (lambda z, t: z > 0, "torch.bool tensor"),
        (lambda z, t: torch.tensor(0.5, dtype=z.dtype), r"shape \(\) for z of shape \(3, 6\)"),
        (lambda z, t: torch.ones_like(z[:1]), r"shape \(1, 6\)"),
        (lambda z, t: torch.sigmoid(z / t).float(), "torch.float32 for z of torch.float64"),
        (lambda z, t: torch.full_like(z, float("nan")), "NaN or infinite"),
        (lambda z, t: 0.5, "returned float, not a tensor"),
    ],
)
def test_a_wrong_gate_is_named_at_its_first_backward(gate, problem):
    model, x = _net()
    rule = GateRule("elu", (F.elu,), gate, 1.0)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises((TypeError, ValueError), match=r"GateRule\('elu'\)\.gate .*" + problem):
        pullbacks.excitation_pullback(model, x, 0, rules=[rule])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_rules_are_checked_when_built():
    with pytest.raises(TypeError, match=r"gate\(z, T\)"):
        GateRule("elu", (F.elu,), lambda z: z, 1.0)  # one argument
    with pytest.raises(TypeError, match="class ELU.*F.elu"):
        GateRule("elu", (nn.ELU,), elu_gate, 1.0)
    with pytest.raises(ValueError, match=r"no temperature.*temperature=\.\.\."):
        GateRule("elu", (F.elu,), elu_gate, None)
    with pytest.raises(TypeError, match="autograd must be a tuple of torch.autograd.Function"):
        SoftenedRule("cube", (torch.tanh,), _cube_run, autograd=(_cube_run,))
    with pytest.raises(TypeError, match="run must be a function"):
        SoftenedRule("cube", (torch.tanh,), None)


def test_a_rule_in_a_built_in_family_keeps_its_default_unless_it_overrides():
    slow = GateRule("silu", (F.silu,), lambda z, t: torch.sigmoid(z / t), 0.5)
    with pytest.raises(ValueError, match="from 1.6 to 0.5: pass override=True"):
        pullbacks.GateOptions(rules=[slow])
    meant = GateRule("silu", (F.silu,), lambda z, t: torch.sigmoid(z / t), 0.5, override=True)
    assert pullbacks.GateOptions(rules=[meant]).temperature_of("silu") == 0.5
    kept = GateRule("silu", (F.silu,), lambda z, t: torch.sigmoid(z / t))  # None: the family's default
    assert pullbacks.GateOptions(rules=[kept]).temperature_of("silu") == 1.6
    with pytest.raises(ValueError, match="relu family's temperature is the option temperature="):
        pullbacks.GateOptions(rules=[GateRule("relu", (F.relu,), lambda z, t: torch.sigmoid(z / t), 0.5)])


def test_no_operator_is_both_ordinary_and_covered_and_nodes_come_from_the_rules():
    from pullbacks.core.coverage import MASKS
    from pullbacks.core.graph import _Kinds
    from pullbacks.core.table import BUILTIN

    covered = {f for r in BUILTIN for f in (*r.functions, *r.inplace_functions)}
    assert not covered & set(MASKS)
    kinds = _Kinds(BUILTIN)
    relu_node = type(torch.relu(torch.ones(1, requires_grad=True)).grad_fn)
    assert kinds(relu_node).startswith("relu (ReluBackward0)")
    assert _Kinds(())(relu_node) == "relu"  # with no rule for it, a hard ReLU is an ordinary operator
