"""Every entry of the allowlist (pullbacks.core.allowlist) proved: its node is built here and its
backward ``f`` checked to be linear, ``f(a·u + b·v) = a·f(u) + b·f(v)``, and the same at other
input values. An entry without a proof here fails ``test_every_entry_has_a_proof``."""

import pytest
import torch
import torch.nn.functional as F

from pullbacks.core.allowlist import FACTORS, LINEAR, WHEN

D = torch.float64
C = torch.randn(4, 6, 8, dtype=D, generator=torch.Generator().manual_seed(1))  # a constant


def _p(shape, build):
    return shape, build


W = torch.randn(5, 3, 3, 3, dtype=D, generator=torch.Generator().manual_seed(2))  # a convolution's weight
M = torch.randn(8, 5, dtype=D, generator=torch.Generator().manual_seed(3))
BN = (C[0, :3, 0], C[0, 3:, 0].abs() + 0.5, C[1, :3, 0], C[1, 3:, 0])  # a batch norm's statistics and affine

PROOFS = {  # node type -> (input shape, the operation that records it)
    "AddBackward0": _p((4, 6, 8), lambda x: x + C),
    "AddBackward1": _p((4, 6, 8), lambda x: torch.ops.aten.add.Scalar(x, 2.5)),
    "SubBackward0": _p((4, 6, 8), lambda x: x - C),
    "SubBackward1": _p((4, 6, 8), lambda x: torch.ops.aten.sub.Scalar(x, 2.5)),
    "RsubBackward0": _p((4, 6, 8), lambda x: torch.rsub(x, C)),
    "RsubBackward1": _p((4, 6, 8), lambda x: 2.5 - x),
    "NegBackward0": _p((4, 6, 8), lambda x: -x),
    "MulBackward1": _p((4, 6, 8), lambda x: torch.ops.aten.mul.Scalar(x, 2.5)),
    "DivBackward1": _p((4, 6, 8), lambda x: torch.ops.aten.div.Scalar(x, 2.5)),
    "SumBackward0": _p((4, 6, 8), lambda x: x.sum()),
    "SumBackward1": _p((4, 6, 8), lambda x: x.sum(1)),
    "MeanBackward0": _p((4, 6, 8), lambda x: x.mean()),
    "MeanBackward1": _p((4, 6, 8), lambda x: x.mean((1, 2))),
    "CumsumBackward0": _p((4, 6, 8), lambda x: x.cumsum(2)),
    "ViewBackward0": _p((4, 6, 8), lambda x: x.view(24, 8)),
    "UnsafeViewBackward0": _p((4, 6, 8), lambda x: torch.matmul(x, M)),
    "ReshapeAliasBackward0": _p((4, 6, 8), lambda x: x[:, :, :4].reshape(4, 6, 2, 2)),
    "AliasBackward0": _p((4, 6, 8), lambda x: torch.ops.aten.alias(x)),
    "PermuteBackward0": _p((4, 6, 8), lambda x: x.permute(2, 0, 1)),
    "TransposeBackward0": _p((4, 6, 8), lambda x: x.transpose(0, 2)),
    "TransposeBackward1": _p((4, 6, 8), lambda x: (x * 1.0).transpose_(0, 2)),
    "TBackward0": _p((6, 8), lambda x: x.t()),
    "ExpandBackward0": _p((4, 1, 8), lambda x: x.expand(4, 6, 8)),
    "SqueezeBackward0": _p((4, 1, 8), lambda x: x.squeeze()),
    "SqueezeBackward1": _p((4, 1, 8), lambda x: x.squeeze(1)),
    "SqueezeBackward2": _p((4, 1, 8), lambda x: x.squeeze((1,))),
    "SqueezeBackward3": _p((4, 1, 8), lambda x: (x * 1.0).squeeze_()),
    "SqueezeBackward4": _p((4, 1, 8), lambda x: (x * 1.0).squeeze_(1)),
    "UnsqueezeBackward0": _p((4, 6, 8), lambda x: x.unsqueeze(1)),
    "CloneBackward0": _p((4, 6, 8), lambda x: x.clone()),
    "ToCopyBackward0": _p((4, 6, 8), lambda x: x.to(torch.float32).to(D)),
    "AsStridedBackward0": _p((4, 6, 8), lambda x: x.as_strided((4, 6), (48, 8))),
    "AsStridedBackward1": _p((4, 6, 8), lambda x: (x * 1.0).as_strided_((4, 6), (48, 8))),
    "FlipBackward0": _p((4, 6, 8), lambda x: x.flip(2)),
    "RollBackward0": _p((4, 6, 8), lambda x: x.roll(3, 2)),
    "RepeatBackward0": _p((4, 6, 8), lambda x: x.repeat(2, 1, 1)),
    "PixelShuffleBackward0": _p((1, 8, 3, 3), lambda x: F.pixel_shuffle(x, 2)),
    "PixelUnshuffleBackward0": _p((1, 2, 6, 6), lambda x: F.pixel_unshuffle(x, 2)),
    "UnfoldBackward0": _p((4, 6, 8), lambda x: x.unfold(2, 3, 2)),
    "Im2ColBackward0": _p((1, 2, 6, 6), lambda x: F.unfold(x, 3)),
    "Col2ImBackward0": _p((1, 18, 16), lambda x: F.fold(x, (6, 6), 3)),
    "TrilBackward0": _p((6, 8), lambda x: x.tril()),
    "TriuBackward0": _p((6, 8), lambda x: x.triu()),
    "DiagonalBackward0": _p((6, 8), lambda x: x.diagonal()),
    "SliceBackward0": _p((4, 6, 8), lambda x: x[:, 1:4]),
    "SelectBackward0": _p((4, 6, 8), lambda x: x[:, 2]),
    "IndexBackward0": _p((4, 6, 8), lambda x: x[:, torch.tensor([0, 2, 2])]),
    "IndexSelectBackward0": _p((4, 6, 8), lambda x: x.index_select(1, torch.tensor([5, 0, 0]))),
    "GatherBackward0": _p((4, 6, 8), lambda x: x.gather(2, torch.tensor([1, 1, 7]).expand(4, 6, 3))),
    "CatBackward0": _p((4, 6, 8), lambda x: torch.cat([x, C], 1)),
    "StackBackward0": _p((4, 6, 8), lambda x: torch.stack([x, C])),
    "SplitBackward0": _p((4, 6, 8), lambda x: x.split(3, 1)[1]),
    "SplitWithSizesBackward0": _p((4, 6, 8), lambda x: x.split([2, 4], 1)[1]),
    "UnbindBackward0": _p((4, 6, 8), lambda x: x.unbind(1)[3]),
    "MaskedFillBackward0": _p((4, 6, 8), lambda x: x.masked_fill(C > 0, -1.0)),
    "WhereBackward0": _p((4, 6, 8), lambda x: torch.where(C > 0, x, C)),
    "EmbeddingBackward0": _p((10, 8), lambda x: F.embedding(torch.tensor([[1, 3, 3], [9, 0, 1]]), x)),
    "ConstantPadNdBackward0": _p((1, 2, 5, 5), lambda x: F.pad(x, (1, 2, 0, 1))),
    "ReflectionPad2DBackward0": _p((1, 2, 5, 5), lambda x: F.pad(x, (1, 2, 2, 1), mode="reflect")),
    "ReplicationPad2DBackward0": _p((1, 2, 5, 5), lambda x: F.pad(x, (1, 2, 2, 1), mode="replicate")),
    "AvgPool2DBackward0": _p((1, 2, 6, 6), lambda x: F.avg_pool2d(x, 2)),
    "AdaptiveAvgPool2DBackward0": _p((1, 2, 7, 7), lambda x: F.adaptive_avg_pool2d(x, 3)),
    "AvgPool3DBackward0": _p((1, 1, 4, 4, 4), lambda x: F.avg_pool3d(x, 2)),
    "UpsampleBilinear2DBackward0": _p((1, 2, 4, 4), lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")),
    "UpsampleNearest2DBackward0": _p((1, 2, 4, 4), lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
    "UpsampleBicubic2DBackward0": _p((1, 2, 4, 4), lambda x: F.interpolate(x, scale_factor=2, mode="bicubic")),
    "UpsampleBilinear2DAaBackward0": _p(
        (1, 2, 8, 8), lambda x: F.interpolate(x, size=(3, 5), mode="bilinear", antialias=True)
    ),
    # factors: linear in each one alone (the other a constant)
    "MulBackward0": _p((4, 6, 8), lambda x: x * C),
    "MmBackward0": _p((6, 8), lambda x: x @ M),
    "BmmBackward0": _p((4, 6, 8), lambda x: torch.bmm(x, C.transpose(1, 2))),
    "AddmmBackward0": _p((6, 8), lambda x: torch.addmm(C[0, :, :5], x, M)),
    "BaddbmmBackward0": _p((4, 6, 8), lambda x: torch.baddbmm(C[:, :, :6], x, C.transpose(1, 2))),
    "ConvolutionBackward0": _p((1, 3, 6, 6), lambda x: F.conv2d(x, W)),
    "DotBackward0": _p((8,), lambda x: torch.dot(x, M[:, 0])),
    "MvBackward0": _p((5, 8), lambda x: torch.mv(x, M[:, 0])),
    "AddcmulBackward0": _p((4, 6, 8), lambda x: torch.addcmul(C, x, C)),
    # linear for some saved values only: the linear case
    "PowBackward0": _p((4, 6, 8), lambda x: x.pow(1) + x.pow(0)),
    "DivBackward0": _p((4, 6, 8), lambda x: x / (C.abs() + 1)),
    "NativeBatchNormBackward0": _p((2, 3, 4, 4), lambda x: F.batch_norm(x, *BN)),
}
# the factors' other positions, each proved with the input there and a constant in the others
SECOND = {
    "MulBackward0": lambda x: C * x,
    "MmBackward0": lambda x: M.t() @ x,
    "BmmBackward0": lambda x: torch.bmm(C.transpose(1, 2), x),
    "AddmmBackward0": lambda x: torch.addmm(C[0, :5], M.t(), x),
    "BaddbmmBackward0": lambda x: torch.baddbmm(C, C, x),
    "ConvolutionBackward0": None,
    "DotBackward0": lambda x: torch.dot(M[:, 0], x),
    "MvBackward0": None,
    "AddcmulBackward0": lambda x: torch.addcmul(C, C, x),
}
# proved on CUDA by test_cudnn_batch_norm_in_eval_mode_is_linear (benchmarks/gpu.sh runs it; passed on a lent
# H200, torch 2.11.0+cu130, 2026-12-04)
CUDA_ONLY = {"CudnnBatchNormBackward0"}


def test_every_entry_has_a_proof():
    entries = set(LINEAR) | set(FACTORS) | set(WHEN)
    assert entries - CUDA_ONLY == set(PROOFS), "an allowlist entry without a proof (or a proof without an entry)"
    assert set(FACTORS) == set(SECOND)


def _vjp(build, x, u):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(build(x), x, u, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def _check_linear(name, shape, build, device="cpu"):
    gen = torch.Generator().manual_seed(hash(name) % 2**31)
    x1, x2 = (torch.randn(shape, dtype=D, generator=gen).to(device) for _ in range(2))
    x1.requires_grad_(True)
    out = build(x1)
    nodes, stack = set(), [out.grad_fn]
    while stack:  # the node must be the one recorded (possibly below an addition that joins two proofs)
        n = stack.pop()
        if n is not None:
            nodes.add(type(n).__name__)
            stack.extend(c for c, _ in n.next_functions)
    assert name in nodes, f"{name}: the proof builds {sorted(nodes)}"
    u, v = (torch.randn(out.shape, dtype=out.dtype, generator=gen).to(device) for _ in range(2))
    a, b = 1.7, -0.6
    left = _vjp(build, x1, a * u + b * v)
    right = a * _vjp(build, x1, u) + b * _vjp(build, x1, v)
    tol = (
        {"rtol": 1e-5, "atol": 1e-6}
        if name in ("ToCopyBackward0", "CudnnBatchNormBackward0")
        else {"rtol": 1e-10, "atol": 1e-12}
    )  # float32
    torch.testing.assert_close(left, right, **tol)
    torch.testing.assert_close(_vjp(build, x1, u), _vjp(build, x2, u), **tol)
    assert _vjp(build, x1, u).abs().sum() > 0 or name == "PowBackward0", f"{name}: the proof is vacuous"


@pytest.mark.parametrize("name", sorted(PROOFS))
def test_the_backward_is_linear_and_independent_of_the_input(name):
    shape, build = PROOFS[name]
    _check_linear(name, shape, build)


@pytest.mark.parametrize("name", sorted(n for n, f in SECOND.items() if f is not None))
def test_a_factor_is_linear_in_its_other_position_too(name):
    shape, _ = PROOFS[name]
    build = SECOND[name]
    shapes = {"MmBackward0": (8, 3), "BmmBackward0": (4, 6, 3), "AddmmBackward0": (8, 8), "BaddbmmBackward0": (4, 8, 8)}
    _check_linear(name, shapes.get(name, shape), build)


def test_the_conditions_name_what_is_not_linear():
    x = torch.randn(3, 4, dtype=D, requires_grad=True)
    assert WHEN["PowBackward0"](x.pow(2).grad_fn, (True,)) == "pow"
    assert WHEN["PowBackward0"](x.pow(1).grad_fn, (True,)) is None
    assert WHEN["DivBackward0"]((x / x).grad_fn, (True, True)) == "division by a tensor"
    assert WHEN["DivBackward0"]((x / 2.0).grad_fn, (True,)) is None
    y = F.batch_norm(x, None, None, training=True)
    assert WHEN["NativeBatchNormBackward0"](y.grad_fn, (True,)) == "batch norm in training mode"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the cuDNN batch norm node exists on CUDA only")
def test_cudnn_batch_norm_in_eval_mode_is_linear():
    shape, build = PROOFS["NativeBatchNormBackward0"]

    def bn(x):
        return F.batch_norm(x.float(), *(s.float().cuda() for s in BN)).double()

    _check_linear("CudnnBatchNormBackward0", shape, bn, "cuda")
