"""EVALUATION.md's known-answers tables: one column per trained network, from the results.json
of its run (``pullbacks evaluate --out media/groundtruth/<family>``).

    python -m pullbacks.experiments.tables relevance_mass_accuracy resnet vgg densenet vit

Each cell is the mean ± standard error over the images; † marks a method whose paired bootstrap
95 % interval against the edge detector does not lie wholly on the better side.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..evaluation.methods import METHODS
from ..evaluation.metrics import bootstrap_ci, mean_se
from ..evaluation.report import COLUMNS, EDGE


def table(results: Mapping[str, dict], column: str, seed: int = 0) -> str:
    """Markdown: one row per method (the first run's order), one column per run of ``results``
    (name -> the parsed results.json)."""
    names = list(results)
    lines = ["| Method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m in results[names[0]]["methods"]:
        cells = []
        for name in names:
            scores = {
                k: np.array([np.nan if v is None else v for v in vals], float)
                for k, vals in results[name]["scores"][column].items()
            }
            mean, se = mean_se(scores[m])
            mark = ""
            if EDGE in scores and not METHODS[m].ignores_model:
                lo, hi = bootstrap_ci(scores[m] - scores[EDGE], seed=seed)
                mark = "" if (lo > 0 if COLUMNS[column].better == "higher" else hi < 0) else " †"
            cells.append(f"{mean:.3f} ± {se:.3f}{mark}")
        lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pullbacks.experiments.tables", description=__doc__.splitlines()[0])
    p.add_argument("column", choices=sorted(COLUMNS))
    p.add_argument("families", nargs="+")
    p.add_argument("--runs", default="media/groundtruth", help="the folder of the runs (default: %(default)s)")
    args = p.parse_args(argv)
    results = {
        f"groundtruth/{f}": json.loads((Path(args.runs) / f / "results.json").read_text(encoding="utf-8"))
        for f in args.families
    }
    print(table(results, args.column))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
