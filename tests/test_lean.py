"""The lean paths of the gates: gates after an eval batch norm (and a residual addition)
keep a replay, not a copy of ``z`` (same gradients, no activation-sized buffer of their
own, safe fallbacks), and the soft max pool works block by block."""

import pytest
import torch
import torch.nn.functional as F
from reference import POOL_CASES, reference_pullback, slow_soft_pool_grad
from torch import nn

import pullbacks
import pullbacks.core.rules.pool as pool_rule


@pytest.fixture(autouse=True)
def replay_every_size(monkeypatch):
    """The lean paths on small tensors: record every batch norm's output, whatever its size."""
    from pullbacks.core.replay import Recorder

    monkeypatch.setattr(Recorder, "MIN_ELEMENTS", 0)


def saved_bytes(model, x, mode=None):
    """Bytes of the distinct non-parameter storages autograd keeps for the backward pass."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in own:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if mode is None:
            model(x.detach().requires_grad_(True))
        else:
            with mode:
                model(x.detach().requires_grad_(True))
    return sum(seen.values())


class Block(nn.Module):
    """conv-bn-relu(in place) twice, a residual ``out += identity`` and a last relu."""

    def __init__(self, identity_bn: bool):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.down = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)) if identity_bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.down(x)
        return self.head(self.relu(out).flatten(1))


def block(identity_bn):
    torch.manual_seed(0)
    model = Block(identity_bn).double().eval()
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.3, 0.3)
    return model


def test_residual_block_equals_reference_and_saves_no_copy():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    for identity_bn in (False, True):
        model = block(identity_bn)
        got = pullbacks.excitation_pullback(model, x, [0, 2], temperature=0.4)
        torch.testing.assert_close(got, reference_pullback(model, x, [0, 2], 0.4), rtol=1e-10, atol=1e-12)
        # every gate here follows an eval batch norm: it keeps that op's inputs, not z
        assert saved_bytes(model, x, pullbacks.soft_gates(0.4)) <= saved_bytes(model, x)


def test_changed_batch_norm_output_falls_back_to_a_copy():
    bn = nn.BatchNorm1d(5).double().eval()
    bn.running_mean.uniform_(-1, 1)
    z0 = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    with pullbacks.soft_gates(0.5):
        z = bn(z0 * 1.0)
        z.add_(0.25)  # the replay of bn's output no longer holds
        y = F.relu(z, inplace=True)
    y.sum().backward()
    pre = bn(z0.detach()) + 0.25
    expected = torch.sigmoid(pre / 0.5) * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    torch.testing.assert_close(z0.grad, expected, rtol=1e-12, atol=1e-12)


def test_training_mode_batch_norm_is_not_replayed():
    bn = nn.BatchNorm1d(3).double().train()
    z0 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    with pullbacks.soft_gates(0.5):
        y = torch.relu(bn(z0))
    g = torch.autograd.grad(y.sum(), z0)[0]
    z = z0.detach().clone().requires_grad_(True)
    pre = F.batch_norm(z, None, None, bn.weight, bn.bias, True)
    expected = torch.autograd.grad(pre, z, torch.sigmoid(pre.detach() / 0.5))[0]
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)


def test_replayed_backward_may_run_twice():
    model = block(True)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    with pullbacks.soft_gates(0.3):
        out = model(x)[0, 1]
    first = torch.autograd.grad(out, x, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], first, rtol=0, atol=0)


@pytest.mark.parametrize("block_bytes", [1, 200, 5000])
def test_soft_pool_in_blocks_of_samples_and_channels(monkeypatch, block_bytes):
    monkeypatch.setattr(pool_rule, "_POOL_BLOCK_BYTES", block_bytes)
    x = torch.randn(3, 5, 7, 8, dtype=torch.float64)
    for case in POOL_CASES:
        pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
        k, s = pair(case["kernel_size"]), pair(case.get("stride"))
        p, d = pair(case.get("padding", 0)), pair(case.get("dilation", 1))
        g = torch.randn_like(F.max_pool2d(x, **case))
        for xx in (x, x.contiguous(memory_format=torch.channels_last)):
            got = pool_rule.soft_max_pool2d_backward(xx, g, k, s, p, d, 0.5)
            expected = slow_soft_pool_grad(x, g, k, s, p, d, case.get("ceil_mode", False), 0.5, "soft")
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def _pool_case(case):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return (
        pair(case["kernel_size"]),
        pair(case.get("stride")),
        pair(case.get("padding", 0)),
        pair(case.get("dilation", 1)),
        case.get("ceil_mode", False),
    )


@pytest.mark.parametrize("variant", ["soft", "detached"])
def test_soft_pool_window_sums_and_window_by_window_agree(monkeypatch, variant):
    # planes of moderate range take the window sums, the others the window-by-window form;
    # one call may mix both (blocks of one plane each here), and both equal the slow reference
    monkeypatch.setattr(pool_rule, "_POOL_BLOCK_BYTES", 1)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    x[1, 2] *= 40  # range / T far above 60: this plane goes window by window
    taken = []
    window_sums = pool_rule._pooled
    monkeypatch.setattr(pool_rule, "_pooled", lambda *a: taken.append(window_sums(*a)) or taken[-1])
    for case in POOL_CASES:
        k, s, p, d, ceil_mode = _pool_case(case)
        g = torch.randn_like(F.max_pool2d(x, **case))
        taken.clear()
        got = pool_rule.soft_max_pool2d_backward(x, g, k, s, p, d, 0.5, variant)
        expected = slow_soft_pool_grad(x, g, k, s, p, d, ceil_mode, 0.5, variant)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        if d == (1, 1) and s != k:
            assert taken.count(True) == 5 and taken.count(False) == 1, taken
        else:
            assert not taken  # dilation, windows that tile x: window by window


def test_soft_pool_window_sums_in_float32_and_large_gradients(monkeypatch):
    x = torch.rand(2, 4, 12, 12, dtype=torch.float64) * 17  # range / T just below 60
    for case in POOL_CASES[:3]:
        k, s, p, d, ceil_mode = _pool_case(case)
        g = torch.randn_like(F.max_pool2d(x, **case))
        expected = slow_soft_pool_grad(x, g, k, s, p, d, ceil_mode, 0.3, "soft")
        got = torch.empty_like(x, dtype=torch.float32)
        assert pool_rule._pooled(x.float(), g.float(), k, s, p, 0.3, "soft", got)
        # the bound of _pooled's docstring: rounding t = (x - max) / T of range 60 costs 60 eps
        bound = 60 * torch.finfo(torch.float32).eps * float(expected.abs().max())
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=bound)
    # windows far below their plane's largest entry: grad / S would overflow float32 beyond
    # |grad| = 1e8, so such gradients go window by window
    x[0, 0, :6, :6], x[0, 0, 6:, 6:] = 0.0, 17.0
    for case in POOL_CASES[:3]:
        k, s, p, d, ceil_mode = _pool_case(case)
        g = torch.rand_like(F.max_pool2d(x, **case)) * 1e14
        expected = slow_soft_pool_grad(x, g, k, s, p, d, ceil_mode, 0.3, "soft")
        got = pool_rule.soft_max_pool2d_backward(x.float(), g.float(), k, s, p, d, 0.3)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6 * 1e14)


@pytest.mark.parametrize(
    "act",
    [
        nn.ReLU6(inplace=True),
        nn.ReLU6(),
        nn.SiLU(inplace=True),
        nn.GELU(),
        nn.Hardswish(),
        nn.LeakyReLU(0.1, inplace=True),
        nn.LeakyReLU(0.1),
    ],
)
def test_gates_keep_no_more_than_the_vanilla_gradient(act):
    # after a batch norm every gate keeps a replay or z: never more than the vanilla gradient keeps
    torch.manual_seed(0)
    model = (
        nn.Sequential(
            nn.Conv2d(3, 8, 3),
            nn.BatchNorm2d(8),
            act,
            nn.Conv2d(8, 8, 3),
            nn.BatchNorm2d(8),
            act,
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 3),
        )
        .double()
        .eval()
    )
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert saved_bytes(model, x, pullbacks.soft_gates(0.4)) <= saved_bytes(model, x)
    got = pullbacks.excitation_pullback(model, x, [0, 2], temperature=0.4)
    with pullbacks.soft_gates(0.4, replay=False):
        z = x.clone().requires_grad_(True)
        model(z)[[0, 1], [0, 2]].sum().backward()
    torch.testing.assert_close(got, z.grad, rtol=0, atol=0)


def test_small_outputs_are_not_recorded(monkeypatch):
    """Below ``Recorder.MIN_ELEMENTS`` a gate keeps its input (recording costs more than it
    saves); at or above it, the replay. The gradient is the same either way."""
    from pullbacks.core.replay import Recorder

    model, x = block(True), torch.randn(1, 4, 6, 6, dtype=torch.float64)  # outputs of 144 entries
    monkeypatch.setattr(Recorder, "MIN_ELEMENTS", 145)
    kept_small = saved_bytes(model, x, pullbacks.soft_gates(0.4))
    g_small = pullbacks.excitation_pullback(model, x, 1, temperature=0.4)
    monkeypatch.setattr(Recorder, "MIN_ELEMENTS", 144)
    kept_replayed = saved_bytes(model, x, pullbacks.soft_gates(0.4))
    assert kept_small == kept_replayed + 2 * 144 * 8  # both gates (after bn1, after the residual sum): a copy each
    assert torch.equal(pullbacks.excitation_pullback(model, x, 1, temperature=0.4), g_small)
