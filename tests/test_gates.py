"""Closed forms and limits of the soft gates (docs/method.md, "The gates" and "The pool")."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from reference import POOL_CASES, slow_soft_pool_grad
from torch import nn

import pullbacks
from pullbacks.core.rules.pool import soft_max_pool2d_backward

torch.manual_seed(0)


def s(u, gate):
    return torch.sigmoid(u) if gate == "sigmoid" else 0.5 * (1 + torch.erf(u / math.sqrt(2)))


def grad_through(fn, z, t, gate="sigmoid", grad_out=None):
    """Input gradient of ``<grad_out, fn(z)>`` computed inside soft_gates."""
    z = z.clone().requires_grad_(True)
    with pullbacks.soft_gates(t, gate=gate):
        y = fn(z * 1.0)  # *1.0: in-place variants need a non-leaf
    g = torch.ones_like(y) if grad_out is None else grad_out
    (y * g).sum().backward()
    return z.grad


@pytest.mark.parametrize("gate", ["sigmoid", "normal_cdf"])
def test_two_layer_mlp_closed_form(gate):
    W1, b1 = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    w2 = torch.randn(7, dtype=torch.float64)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1)).double().eval()
    with torch.no_grad():
        mlp[0].weight.copy_(W1), mlp[0].bias.copy_(b1), mlp[2].weight.copy_(w2[None])
    x = torch.randn(3, 5, dtype=torch.float64)
    t = 0.7
    got = pullbacks.excitation_pullback(mlp, x, 0, temperature=t, gate=gate)
    z = x @ W1.T + b1
    expected = (w2 * s(z / t, gate)) @ W1
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # and it is not the vanilla gradient
    assert not torch.allclose(got, (w2 * (z > 0)) @ W1)


@pytest.mark.parametrize("gate", ["sigmoid", "normal_cdf"])
@pytest.mark.parametrize(
    "call",
    [
        lambda z: F.relu(z),
        lambda z: torch.relu(z),
        lambda z: z.relu(),
        lambda z: z.relu_(),
        lambda z: F.relu(z, inplace=True),
        lambda z: nn.ReLU(inplace=True)(z),
        lambda z: torch.relu_(z),
    ],
)
def test_relu_calls_get_the_gate(call, gate):
    z = torch.randn(50, dtype=torch.float64) * 3
    torch.testing.assert_close(grad_through(call, z, 0.5, gate), s(z / 0.5, gate), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gate", ["sigmoid", "normal_cdf"])
@pytest.mark.parametrize(
    "call",
    [
        lambda z: F.relu6(z),
        lambda z: nn.ReLU6(inplace=True)(z),
        lambda z: F.hardtanh(z, 0.0, 6.0),
    ],
)
def test_relu6_closed_form(call, gate):
    z = torch.linspace(-3, 9, 61, dtype=torch.float64) + 0.013
    expected = s(z / 0.4, gate) * s((6 - z) / 0.4, gate)
    torch.testing.assert_close(grad_through(call, z, 0.4, gate), expected, rtol=1e-12, atol=1e-12)


def test_hardtanh_general_bounds():
    z = torch.linspace(-4, 4, 41, dtype=torch.float64) + 0.01
    expected = torch.sigmoid((z + 2) / 0.3) * torch.sigmoid((1.5 - z) / 0.3)
    got = grad_through(lambda v: F.hardtanh(v, -2.0, 1.5, inplace=True), z, 0.3)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda z: F.leaky_relu(z, 0.2),
        lambda z: nn.LeakyReLU(0.2, inplace=True)(z),
    ],
)
def test_leaky_relu_closed_form(call):
    z = torch.randn(40, dtype=torch.float64) * 2
    expected = 0.2 + 0.8 * torch.sigmoid(z / 0.6)
    torch.testing.assert_close(grad_through(call, z, 0.6), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["soft", "detached"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_closed_form(case, variant):
    x = torch.randn(2, 2, 7, 8, dtype=torch.float64)
    pool = nn.MaxPool2d(**case)
    z = x.clone().requires_grad_(True)
    with pullbacks.soft_gates(0.3, pool_temperature=0.5, pool=variant):
        y = pool(z)
    torch.testing.assert_close(y, F.max_pool2d(x, **case), rtol=0, atol=0)  # forward unchanged
    g = torch.randn_like(y)
    y.backward(g)

    def pair(v):
        return (v, v) if isinstance(v, int) else v

    expected = slow_soft_pool_grad(
        x,
        g,
        pair(case["kernel_size"]),
        pair(case.get("stride")),
        pair(case.get("padding", 0)),
        pair(case.get("dilation", 1)),
        case.get("ceil_mode", False),
        0.5,
        variant,
    )
    torch.testing.assert_close(z.grad, expected, rtol=1e-10, atol=1e-12)


def test_max_pool_functional_with_indices_and_unbatched():
    x = torch.randn(3, 6, 6, dtype=torch.float64)
    z = x.clone().requires_grad_(True)
    with pullbacks.soft_gates(0.3):
        y, idx = F.max_pool2d(z, 2, return_indices=True)
    ref_y, ref_idx = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(y, ref_y) and torch.equal(idx, ref_idx)
    y.sum().backward()
    expected = slow_soft_pool_grad(
        x[None], torch.ones_like(ref_y)[None], (2, 2), (2, 2), (0, 0), (1, 1), False, 0.3, "soft"
    )
    torch.testing.assert_close(z.grad, expected[0], rtol=1e-10, atol=1e-12)


def test_pool_backward_tends_to_max_pool_gradient():
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    g = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    z = x.clone().requires_grad_(True)
    F.max_pool2d(z, 3, 2, 1).backward(g)
    soft = soft_max_pool2d_backward(x, g, 3, 2, 1, 1, 1e-7)
    torch.testing.assert_close(soft, z.grad, rtol=1e-8, atol=1e-8)


def small_cnn():
    return (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3),
            nn.LeakyReLU(0.1),
            nn.Flatten(),
            nn.Linear(8 * 6 * 6, 4),
        )
        .double()
        .eval()
    )


def test_low_temperature_gives_vanilla_gradient():
    torch.manual_seed(1)
    model = small_cnn()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    xv = x.clone().requires_grad_(True)
    model(xv)[:, 2].sum().backward()
    soft = pullbacks.excitation_pullback(model, x, 2, temperature=1e-6)  # the smallest accepted
    torch.testing.assert_close(soft, xv.grad, rtol=1e-7, atol=1e-10)
    # while the paper's temperature differs from it
    assert not torch.allclose(pullbacks.excitation_pullback(model, x, 2), xv.grad, rtol=1e-2)


def test_high_temperature_linearises_a_bias_free_mlp():
    torch.manual_seed(2)
    mlp = (
        nn.Sequential(
            nn.Linear(6, 9, bias=False), nn.ReLU(), nn.Linear(9, 9, bias=False), nn.ReLU(), nn.Linear(9, 3, bias=False)
        )
        .double()
        .eval()
    )
    x = torch.randn(4, 6, dtype=torch.float64)
    g = pullbacks.excitation_pullback(mlp, x, 1, temperature=1e9)
    W1, W2, W3 = (m.weight for m in mlp if isinstance(m, nn.Linear))
    expected = (0.25 * W3[1] @ W2 @ W1).detach()  # every gate 1/2
    torch.testing.assert_close(g, expected.expand_as(g), rtol=1e-7, atol=1e-9)
    # at the paper's temperature the pullback depends on the input
    g = pullbacks.excitation_pullback(mlp, x, 1)
    assert not torch.allclose(g[0], g[1])


# ---------------------------------------------------------------------------- subnormal floats


def flushes_subnormals() -> bool:
    """The process's flush-to-zero state, read by experiment (torch has no getter)."""
    return float(torch.tensor([1e-39], dtype=torch.float32) * 1.0) == 0.0


@pytest.mark.parametrize("call", [F.relu, F.relu6, lambda z: F.leaky_relu(z, 0.0), nn.MaxPool2d(2)])
def test_gates_give_no_subnormal_floats(call):
    """sigmoid(-100) = 3.7e-44 is subnormal in float32; the gate must pass an exact 0 instead
    (x86 arithmetic on subnormals is slow), and leave normal values as they are."""
    z = torch.tensor([[[[-100.0, -100.0], [3.0, -1.0]]]])
    grad_out = torch.ones_like(call(z)) * torch.tensor(1.0)
    g = grad_through(call, z, 1.0, grad_out=grad_out)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((g != 0) & (g.abs() < tiny)).any(), g
    if call is not F.relu6 and not isinstance(call, nn.MaxPool2d):
        assert g[0, 0, 0, 0] == 0 and g[0, 0, 1, 0] == torch.sigmoid(torch.tensor(3.0))


@pytest.mark.parametrize("flush", [False, True])
def test_the_users_flush_denormal_setting_is_kept(flush):
    if not torch.set_flush_denormal(flush):
        pytest.skip("this CPU has no flush-denormal mode")
    try:
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
        x = torch.randn(3, 4)
        pullbacks.excitation_pullback(model, x, 1)
        assert flushes_subnormals() == flush
        with pytest.raises(ValueError):
            pullbacks.excitation_pullback(model, x, 7)  # out of range: raises after the forward pass
        assert flushes_subnormals() == flush
        with pullbacks.soft_gates():  # the README's form: backward after the block
            y = model(x.requires_grad_())
        y[:, 0].sum().backward()
        assert flushes_subnormals() == flush
    finally:
        torch.set_flush_denormal(False)


def test_the_flush_keeps_float16_subnormals_and_flushes_float32_ones():
    """float16's smallest normal (6.1e-5) is an ordinary gradient value: nothing is flushed
    there; in float32/float64 only true subnormals go."""
    from pullbacks.core.rules.base import flush_subnormals_

    half = torch.tensor([1e-6, -3e-5, 1.0], dtype=torch.float16)
    assert torch.equal(flush_subnormals_(half.clone()), half)
    bf = torch.tensor([1e-39, 1.0], dtype=torch.bfloat16)
    assert torch.equal(flush_subnormals_(bf.clone()), bf)
    single = torch.tensor([1e-40, -1e-39, 2e-38, 1.0])
    assert flush_subnormals_(single.clone()).tolist() == [0.0, 0.0, single[2].item(), 1.0]


def test_float16_pullback_agrees_with_float32():
    torch.manual_seed(0)
    net32 = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    with torch.no_grad():
        net32[4].weight.mul_(1e-3)  # small logit weights: gate gradients below float16's smallest normal
    net16 = copy.deepcopy(net32).half()
    x = torch.randn(4, 64)
    g32 = pullbacks.excitation_pullback(net32, x, 3)
    g16 = pullbacks.excitation_pullback(net16, x.half(), 3).float()
    assert g32.abs().max() < 6.1e-5  # the case the old flush (below finfo.tiny) zeroed
    assert (g16 - g32).norm() / g32.norm() < 0.01


@pytest.mark.slow
def test_half_precision_and_float64_on_the_embedded_model(embedded):
    """EfficientNet-Lite0 (pretrained, embedded): float16 and bfloat16 pullbacks on the CPU
    against float32, float64 against float32, and a 2-step ascent's direction."""
    from pullbacks.images import builtin_photos

    loaded = embedded
    x = torch.stack([p.image for p in builtin_photos()[:2]])
    t = [285, 967]

    def vanilla(model, xs):
        xs = xs.clone().requires_grad_()
        (g,) = torch.autograd.grad(model(xs).gather(1, torch.tensor(t)[:, None]).sum(), xs)
        return g.float()

    plain = vanilla(loaded.model, x)
    for recipe, temperature in (("excitation", 1.0), ("semantic", 1.7)):
        ref = pullbacks.excitation_pullback(loaded.model, x, t, temperature=temperature, recipe=recipe)

        def rel(dtype):
            model = copy.deepcopy(loaded.model).to(dtype)
            g = pullbacks.excitation_pullback(model, x.to(dtype), t, temperature=temperature, recipe=recipe)
            v = vanilla(model, x.to(dtype))
            return float((g.float() - ref).norm() / ref.norm()), float((v - plain).norm() / plain.norm())

        assert rel(torch.float64)[0] < 1e-4, recipe
        for dtype in (torch.float16, torch.bfloat16):  # no worse than the dtype makes the vanilla gradient
            pullback_error, vanilla_error = rel(dtype)
            assert pullback_error < vanilla_error, (recipe, dtype)  # measured: 0.05 vs 0.22, 0.37 vs 0.63
        assert rel(torch.float16)[0] < 0.1, recipe  # the old flush (below float16's smallest normal) gave 0.64
    half = copy.deepcopy(loaded.model).half()
    a32 = pullbacks.gradient_ascent(loaded.model, x, t, steps=2, temperature=1.0) - x
    a16 = (pullbacks.gradient_ascent(half, x.half(), t, steps=2, temperature=1.0) - x.half()).float()
    cosine = float((a32 * a16).sum() / (a32.norm() * a16.norm()))
    assert cosine > 0.95  # the old flush gave 0.19


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float32, 2e-7, 0.0), (torch.float64, 4e-16, 1e-15), (torch.bfloat16, 0.0, 0.0)]
)
def test_phi_is_the_normal_cdf_of_torch(dtype, rtol, atol):
    # the Phi gate goes through erf (vectorised); torch.special.ndtr is the same formula, slower
    from pullbacks.core.rules.relu import gate_times

    u = torch.cat([torch.linspace(-12, 12, 20001, dtype=torch.float64), torch.tensor([0.0, -40.0, 40.0])]).to(dtype)
    grad = torch.linspace(-2, 3, u.numel(), dtype=torch.float64).to(dtype)
    for beta in (1.0, 1 / 0.6):
        want = torch.special.ndtr(u * beta) * grad
        for out in (None, (u * 1).clone()):
            got = gate_times(grad, u, beta, "normal_cdf", out=out)
            torch.testing.assert_close(got, want, rtol=rtol, atol=atol)  # float64: 1 ulp of 1 + erf
    wide = torch.special.ndtr(torch.tensor([-8.0, 0.0, 8.0], dtype=torch.float64))
    assert wide[1] == 0.5 and 0 <= wide[0] < 1e-14 and 1 - 1e-14 < wide[2] <= 1  # the reference is the CDF
