"""The temperature a trained network is recommended at: the one whose pullback puts the most
positive relevance on the deciding pixels (relevance mass accuracy), on images of a seed kept
for this (neither training, held-out check nor evaluation sees them).

    python -m pullbacks.experiments.sweep densenet
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import torch

from ..groundtruth.task import generate
from ..groundtruth.weights import FAMILIES, PREFIX

SWEEP_SEED = 3_000_017
TEMPERATURES = (0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)


def sweep(
    family: str, temperatures: Sequence[float] = TEMPERATURES, n: int = 200, seed: int = SWEEP_SEED
) -> dict[float, float]:
    """Mean relevance mass accuracy of the pullback at each ReLU/max-pool temperature (for the
    ViT, its stem's ReLU at that temperature and every other family's scaled by the same factor
    from its default)."""
    from ..core.pullback import excitation_pullback
    from ..core.table import default_temperatures
    from ..evaluation.suite import relevance_mass_accuracy
    from ..models import load_model

    net = load_model(PREFIX + family)
    x, y, m = generate(n, seed)
    out = {}
    for t in temperatures:
        if family == "vit":
            o = net.options(temperature=t, temperatures={k: v * t for k, v in default_temperatures().items()})
        else:
            o = net.options(temperature=t, pool_temperature=t)
        a = torch.cat([excitation_pullback(net.model, x[i : i + 50], y[i : i + 50], o.gates) for i in range(0, n, 50)])
        out[t] = float(np.nanmean(relevance_mass_accuracy({"p": a}, m)["p"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pullbacks.experiments.sweep", description=__doc__.splitlines()[0])
    p.add_argument("families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = p.parse_args(argv)
    for family in args.families:
        scores = sweep(family)
        print(json.dumps({"family": family, "mass_accuracy": scores, "best": max(scores, key=lambda t: scores[t])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
