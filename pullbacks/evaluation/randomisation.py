"""Model-parameter randomisation (Adebayo et al. 2018), cascading over a few layer blocks.

:func:`randomisation_blocks` groups a model's parameterised layers into contiguous blocks,
top (logits) first; :func:`randomised_copies` yields deep copies with one more block
re-initialised each time. The user's model is never touched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .metrics import device_of, forked_rng


@dataclass(frozen=True)
class Block:
    """Contiguous layers re-initialised together: ``modules`` are qualified module names."""

    label: str
    modules: tuple[str, ...]


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly, in registration (≈ forward) order."""
    seen, layers = set(), []
    for name, m in model.named_modules():
        if id(m) in seen:
            continue
        seen.add(id(m))
        if any(True for _ in m.parameters(recurse=False)):
            layers.append((name, m))
    return layers


def _short_names(names: list[str]) -> list[str]:
    """Drop the dotted prefix every name shares (``net.`` of our input-space wrapper)."""
    parts = [n.split(".") for n in names]
    k = 0
    while len(parts) > 1 and all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return [".".join(p[k:]) for p in parts]


def _shared(a: str, b: str) -> int:
    """How many leading name components two layer names share (``layer3.5.bn3`` vs ``layer4.0.conv1``: 0)."""
    n = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        n += 1
    return n


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def randomisation_blocks(model: nn.Module, n_blocks: int = 5) -> list[Block]:
    """Split ``model``'s parameterised layers into ``n_blocks`` contiguous blocks, top first.

    The top block is the last layer alone (the logits, where Adebayo et al. start). The
    other layers are split into ``n_blocks - 1`` groups of about equal numbers of layers,
    preferring cuts between coarse parts of the module tree: each cut minimises
    ``|position - ideal| / group size + 0.5 * (name components shared across the cut)``,
    so ``layer3 | layer4`` beats ``layer4.0 | layer4.1``, which beats a cut inside a
    residual block. Labels name the parts a block spans (``blocks.5–bn2``, ``layer4``).
    """
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1:
        raise ValueError(f"n_blocks must be an integer >= 1, got {n_blocks!r}")
    layers = _layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no parameters to randomise")
    names = [n for n, _ in layers]
    short = _short_names(names)
    level = [0] + [_shared(short[c - 1], short[c]) for c in range(1, len(short))]  # level[c]: cut before c
    if n_blocks >= len(layers):
        bounds = list(range(len(layers), -1, -1))
    else:
        rest = len(layers) - 1  # layers below the top one
        k = n_blocks - 1
        bounds, upper = [len(layers), rest], rest
        for j in range(1, k):  # cut positions, from the top down
            ideal = rest - j * rest / k
            remaining = k - j  # groups still to make below this cut
            c = min(range(remaining, upper), key=lambda c: (abs(c - ideal) / (rest / k) + 0.5 * level[c], -c))
            bounds.append(c)
            upper = c
        bounds.append(0)
    blocks = []
    for hi, lo in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        depth = max(level[lo], level[hi] if hi < len(short) else 0) + 1  # enough to tell the cuts apart
        first, last = _prefix(short[lo], depth), _prefix(short[hi - 1], depth)
        label = first if first == last else f"{first}–{last}"
        blocks.append(Block(label, tuple(names[lo:hi])))
    return blocks


def reinitialise(module: nn.Module) -> None:
    """Re-initialise the parameters ``module`` owns directly, as PyTorch would at construction.

    ``reset_parameters()`` where the module has it (convolutions, linear layers; BatchNorm
    also resets its running statistics to mean 0, variance 1); otherwise PyTorch's default
    layer initialisation: Kaiming-uniform (``a = sqrt(5)``) for weights of two or more
    dimensions, uniform in ``±1/sqrt(n)`` for vectors.
    """
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            if p.dim() >= 2:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            else:
                bound = 1 / math.sqrt(max(1, p.numel()))
                nn.init.uniform_(p, -bound, bound)


def randomised_copies(
    model: nn.Module, blocks: Sequence[Block] | int = 5, *, seed: int = 0
) -> Iterator[tuple[Block, nn.Module]]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018), top block first.

    Yields ``(block, copy)`` where ``copy`` is one deep copy of ``model`` in which this block
    and every block yielded before it have been re-initialised (:func:`reinitialise`). The
    same copy object is mutated from one step to the next; ``model`` itself is never
    touched. Re-initialisation draws from torch's RNG seeded with ``seed + step`` and
    restores the global RNG state afterwards.
    """
    if isinstance(blocks, int):
        blocks = randomisation_blocks(model, blocks)
    clone = copy.deepcopy(model).eval()
    modules = dict(clone.named_modules())
    device = device_of(clone)
    for step, block in enumerate(blocks):
        missing = [n for n in block.modules if n not in modules]
        if missing:
            raise ValueError(f"block {block.label!r} names modules the model does not have: {missing}")
        with forked_rng(seed + step, device):
            for name in block.modules:
                reinitialise(modules[name])
        yield block, clone


# --------------------------------------------------------------------------- perturbations
