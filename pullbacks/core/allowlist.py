"""The allowlist: the autograd node types whose backward is linear in the incoming gradient
and does not depend on the input's values, so that a pullback passes through them as the
vanilla gradient does, with nothing to soften (docs/method.md, "Coverage").

Whatever a forward pass records that is on none of these lists and is not a soft node of a
rule in effect is reported as ordinary (:mod:`.graph`): a new operator, a library's kernel,
a TorchScript graph. The lists grow only with a proof: ``tests/test_allowlist.py`` builds
each entry's node and checks ``f(a·u + b·v) = a·f(u) + b·f(v)`` for its backward ``f`` and
that ``f`` is the same at other input values; an entry without a proof fails that test.

* ``LINEAR``: always linear (views, indexing, sums, convolutions with constant weights, ...).
* ``FACTORS``: linear in each factor alone (``a * b``, ``a @ b``, a convolution): a
  **product** when two of the listed inputs depend on the input (``h * h``, ``q @ kᵀ``),
  linear otherwise.
* ``WHEN``: linear only for some saved values (a power of 0 or 1, a batch norm in eval
  mode, a division by a constant); the check returns the name of what it is otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LINEAR: frozenset[str] = frozenset(
    {
        # arithmetic with constants
        "AddBackward0",
        "AddBackward1",
        "SubBackward0",
        "SubBackward1",
        "RsubBackward0",
        "RsubBackward1",
        "NegBackward0",
        "MulBackward1",
        "DivBackward1",
        "SumBackward0",
        "SumBackward1",
        "MeanBackward0",
        "MeanBackward1",
        "CumsumBackward0",
        # shapes, views, copies and casts
        "ViewBackward0",
        "UnsafeViewBackward0",
        "ReshapeAliasBackward0",
        "AliasBackward0",
        "PermuteBackward0",
        "TransposeBackward0",
        "TransposeBackward1",
        "TBackward0",
        "ExpandBackward0",
        "SqueezeBackward0",
        "SqueezeBackward1",
        "SqueezeBackward2",
        "SqueezeBackward3",
        "SqueezeBackward4",
        "UnsqueezeBackward0",
        "CloneBackward0",
        "ToCopyBackward0",
        "AsStridedBackward0",
        "AsStridedBackward1",
        "FlipBackward0",
        "RollBackward0",
        "RepeatBackward0",
        "PixelShuffleBackward0",
        "PixelUnshuffleBackward0",
        "UnfoldBackward0",
        "Im2ColBackward0",
        "Col2ImBackward0",
        "TrilBackward0",
        "TriuBackward0",
        "DiagonalBackward0",
        # indexing, joining and splitting
        "SliceBackward0",
        "SelectBackward0",
        "IndexBackward0",
        "IndexSelectBackward0",
        "GatherBackward0",
        "CatBackward0",
        "StackBackward0",
        "SplitBackward0",
        "SplitWithSizesBackward0",
        "UnbindBackward0",
        "MaskedFillBackward0",
        "WhereBackward0",
        "EmbeddingBackward0",
        "ConstantPadNdBackward0",
        "ReflectionPad2DBackward0",
        "ReplicationPad2DBackward0",
        # pooling by averages and resampling
        "AvgPool2DBackward0",
        "AdaptiveAvgPool2DBackward0",
        "AvgPool3DBackward0",
        "UpsampleBilinear2DBackward0",
        "UpsampleNearest2DBackward0",
        "UpsampleBicubic2DBackward0",
        "UpsampleBilinear2DAaBackward0",
    }
)

# node type -> the positions (in ``next_functions``) of its factors
FACTORS: dict[str, tuple[int, ...]] = {
    "MulBackward0": (0, 1),
    "MmBackward0": (0, 1),
    "BmmBackward0": (0, 1),
    "AddmmBackward0": (1, 2),
    "BaddbmmBackward0": (1, 2),
    "ConvolutionBackward0": (0, 1),
    "DotBackward0": (0, 1),
    "MvBackward0": (0, 1),
    "AddcmulBackward0": (1, 2),
}


def _saved(node: Any, name: str, default: Any = None) -> Any:
    try:
        return getattr(node, name)
    except Exception:  # freed by a backward pass, or absent in this torch version
        return default


def _power(node: Any, on_path: tuple[bool, ...]) -> str | None:
    """``x ** e`` is linear for ``e`` 0 or 1 only."""
    return None if _saved(node, "_saved_exponent") in (0, 1) else "pow"


def _divisor(node: Any, on_path: tuple[bool, ...]) -> str | None:
    """``a / b`` is linear in ``a`` while ``b`` does not depend on the input."""
    return "division by a tensor" if len(on_path) > 1 and on_path[1] else None


def _batch_norm(node: Any, on_path: tuple[bool, ...]) -> str | None:
    """An eval-mode batch norm is affine; in training mode it normalises by the batch."""
    return "batch norm in training mode" if _saved(node, "_saved_training", True) else None


WHEN: dict[str, Callable[[Any, tuple[bool, ...]], str | None]] = {
    "PowBackward0": _power,
    "DivBackward0": _divisor,
    "NativeBatchNormBackward0": _batch_norm,
    "CudnnBatchNormBackward0": _batch_norm,
}
