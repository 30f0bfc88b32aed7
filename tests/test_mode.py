"""soft_gates() on real architectures: forward invariance, equality with the slow
reference, and a user's model left exactly as it was."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import assert_unchanged, snapshot
from reference import reference_pullback
from torch import nn

import pullbacks

ARCHS = ["resnet50", "vgg11_bn", "densenet121"]
_cache = {}


def arch(name, dtype=torch.float32):
    if (name, dtype) not in _cache:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval().to(dtype)
        _cache[name, dtype] = model
    return _cache[name, dtype]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_replay_is_bit_identical_to_the_plain_path(name):
    """The memory-saving replays (recomputing z after eval batch norms) change nothing."""
    model = arch(name)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    replayed = pullbacks.excitation_pullback(model, x, [3, 7], replay=True)
    plain = pullbacks.excitation_pullback(model, x, [3, 7], replay=False)
    assert torch.equal(replayed, plain)
    with pullbacks.soft_gates(replay=True) as mode:
        model(x.requires_grad_())
    assert mode.recorder is not None and mode.gated["relu"] > 0
    with pullbacks.soft_gates(replay=False) as mode:
        model(x)
    assert mode.recorder is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_forward_is_unchanged_bit_for_bit(name):
    model = arch(name)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    plain = model(x.clone().requires_grad_(True))
    with pullbacks.soft_gates(0.3) as mode:
        soft = model(x.clone().requires_grad_(True))
    assert mode.gates_seen > 0
    assert torch.equal(plain, soft)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_equals_slow_reference_float64(name):
    model = arch(name, torch.float64)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    targets = [3, 917]
    got = pullbacks.excitation_pullback(model, x, targets, temperature=0.3)
    expected = reference_pullback(model, x, targets, 0.3)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    # the reference really differs from the vanilla gradient, so the equality means something
    xv = x.clone().requires_grad_(True)
    model(xv).gather(1, torch.tensor(targets)[:, None]).sum().backward()
    assert (expected - xv.grad).norm() > 0.1 * xv.grad.norm()


@pytest.mark.slow
@pytest.mark.parametrize("gate,pool", [("normal_cdf", "soft"), ("sigmoid", "detached")])
def test_equals_slow_reference_variants(gate, pool):
    model = arch("resnet50", torch.float64)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    got = pullbacks.excitation_pullback(model, x, [7], temperature=0.5, pool_temperature=0.2, gate=gate, pool=pool)
    expected = reference_pullback(model, x, [7], 0.5, gate, pool_t=0.2, pool=pool)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_densenet_functional_relu_is_gated():
    """DenseNet's last ReLU is F.relu(..., inplace=True) in forward(): count it."""
    model = arch("densenet121")
    modules = sum(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in model.modules())
    with pullbacks.soft_gates() as mode:
        model(torch.randn(1, 3, 64, 64, requires_grad=True))
    assert mode.gates_seen == modules + 1


def test_reused_relu_gets_one_gate_per_call():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 2)).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pullbacks.soft_gates() as mode:
        net(x.requires_grad_())
    assert mode.gates_seen == 2
    got = pullbacks.excitation_pullback(net, x, 1, temperature=0.4)
    torch.testing.assert_close(got, reference_pullback(net, x, [1, 1, 1], 0.4), rtol=1e-12, atol=1e-12)


def test_inplace_call_mutates_like_the_original():
    z = torch.randn(10, requires_grad=True)
    a = z * 1.0
    with pullbacks.soft_gates():
        out = F.relu(a, inplace=True)
    assert out is a and torch.equal(a, torch.relu(z))


def test_backward_may_run_after_the_block_with_the_gate_fixed():
    z = torch.randn(20, dtype=torch.float64, requires_grad=True)
    with pullbacks.soft_gates(0.25):
        y = torch.relu(z)
    with pullbacks.soft_gates(5.0):  # a different mode active at backward time changes nothing
        y.sum().backward()
    torch.testing.assert_close(z.grad, torch.sigmoid(z.detach() / 0.25))


def test_nothing_is_gated_without_grad():
    with torch.no_grad(), pullbacks.soft_gates() as mode:
        torch.relu(torch.randn(3, requires_grad=True))
    assert mode.gates_seen == 0


class Raises(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        self.inner(x)
        raise RuntimeError("boom")


def _user_touched_model():
    """A model as a user may hold it: hooks, requires_grad flags and .grad already set."""
    model = arch("resnet50")
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.layer1[0].conv1.weight.requires_grad_(False)
    model.register_forward_hook(lambda *a: None)
    model.layer2[0].relu.register_forward_pre_hook(lambda *a: None)
    return model


@pytest.mark.slow
def test_model_untouched_by_pullback_and_ascent():
    model = _user_touched_model()
    try:
        before = snapshot(model)
        x = torch.rand(2, 3, 64, 64) * 2 - 1
        pullbacks.excitation_pullback(model, x, [1, 2])
        pullbacks.gradient_ascent(model, x, 5, steps=2)
        pullbacks.gradient_ascent(model, x, 5, steps=1, method="gradient")
        assert_unchanged(model, before)
    finally:
        _cache.clear()


@pytest.mark.slow
def test_model_untouched_when_forward_or_validation_raises():
    model = _user_touched_model()
    try:
        before = snapshot(model)
        with pytest.raises(RuntimeError, match="boom"):
            pullbacks.excitation_pullback(Raises(model).eval(), torch.randn(1, 3, 64, 64), 0)
        assert_unchanged(model, before)
        with pytest.raises(ValueError, match="out of range"):
            pullbacks.gradient_ascent(model, torch.rand(1, 3, 64, 64) * 2 - 1, 1000)
        assert_unchanged(model, before)
        with pytest.raises(RuntimeError, match="boom"), pullbacks.soft_gates():
            Raises(model)(torch.randn(1, 3, 64, 64, requires_grad=True))
        assert_unchanged(model, before)
    finally:
        _cache.clear()


def test_module_hooks_only_where_a_module_rule_can_match():
    """Global forward hooks cost something on every module call: a pullback registers them only
    when its model holds a module some module rule names (a bare block always does)."""
    import torch.nn.modules.module as m
    from torch import nn

    from pullbacks.core.mode import SoftGateMode
    from pullbacks.core.options import GateOptions

    class LlamaRMSNorm(nn.Module):  # named like Hugging Face's
        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert SoftGateMode(GateOptions(), model=plain).modules is None
    assert SoftGateMode(GateOptions(), model=nn.Sequential(plain, LlamaRMSNorm())).modules is not None
    assert SoftGateMode(GateOptions()).modules is not None
    before = len(m._global_forward_hooks)
    with SoftGateMode(GateOptions(), model=nn.Sequential(plain, LlamaRMSNorm())):
        assert len(m._global_forward_hooks) == before + 1
    assert len(m._global_forward_hooks) == before


def test_module_rules_serve_only_the_thread_of_the_block():
    """Global forward hooks see every thread's modules; another thread's model runs as it would
    without the block (the app serves requests in threads)."""
    import threading

    from torch import nn

    import pullbacks

    class LlamaRMSNorm(nn.Module):
        variance_epsilon = 1e-6

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)

    norm, seen = LlamaRMSNorm(), {}

    def elsewhere():
        y = norm(torch.randn(2, 8, requires_grad=True))
        seen["grad_fn"] = type(y.grad_fn).__name__

    with pullbacks.soft_gates() as mode:
        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
        assert not mode.coverage.gated and not mode.modules.frames
        y = norm(torch.randn(2, 8, requires_grad=True))
    assert seen["grad_fn"] == "MulBackward0"  # the other thread's ordinary graph
    assert mode.coverage.gated["norm"] == 1 and "Straight" in type(y.grad_fn).__name__
