"""Recipes: the two published versions of the method, each a named set of option values.

``"excitation"`` is the seed paper (arXiv 2507.22832, and its demo); ``"semantic"`` the
authors' follow-up code ("Semantic Pullbacks"). Every option a recipe sets can still be
given on its own, and then wins over the recipe for that one value:
``soft_gates(recipe="semantic", temperature=0.5)``.

=====================  ===============================  ====================================
option                 ``"excitation"`` (the default)   ``"semantic"``
=====================  ===============================  ====================================
gate (ReLU family)     sigmoid, T 0.3                   normal CDF Φ, T 0.6
max pool               soft, T_pool = T                 detached weights, T_pool 0.3
SiLU / GELU            σ(z/1.6) / Φ(z/1.0)              the same
norms                  statistics held                  the same
attention T            1.5                              1.0
``F.scaled_dot_product_attention``  soft (softmax at scale/T)  held weights (gradient through v)
``nn.MultiheadAttention``           soft (query projection / T)  query and key inputs / T
ascent eps             100                              none
=====================  ===============================  ====================================
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .table import families

RECIPES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "excitation": MappingProxyType(
            {  # the table's defaults (the ReLU rules' 0.3, attention 1.5, ...)
                "temperature": families()["relu"][0].temperature,
                "pool_temperature": None,
                "gate": "sigmoid",
                "pool": "soft",
                "temperatures": MappingProxyType({}),
                "variants": MappingProxyType({}),
                "eps": 100.0,
            }
        ),
        "semantic": MappingProxyType(
            {
                "temperature": 0.6,
                "pool_temperature": 0.3,
                "gate": "normal_cdf",
                "pool": "detached",
                "temperatures": MappingProxyType({"attention": 1.0}),
                "variants": MappingProxyType({"sdpa": "held", "mha": "inputs"}),
                "eps": None,
            }
        ),
    }
)
DEFAULT_RECIPE = "excitation"


def recipe_values(name: str) -> Mapping[str, Any]:
    """The option values of recipe ``name`` (a ValueError names the known recipes)."""
    if name not in RECIPES:
        raise ValueError(
            f"unknown recipe {name!r}; known: {', '.join(map(repr, RECIPES))} "
            '("excitation": the seed paper, "semantic": the authors\' follow-up)'
        )
    return RECIPES[name]
