"""What reading coverage off the autograd graph costs: the graph walk (pullbacks.core.graph.walk)
against one pullback step (a forward and a backward pass under the soft gates), as ratios.

    python benchmarks/coverage.py                       # ResNet50 and DenseNet121, 224 px, batch 1
    python benchmarks/coverage.py --models resnet18 --size 64 --repeats 5

    step        excitation_pullback of one target (the denominator); its first call on a model
                walks the graph, later calls reuse the reading while the model's structure,
                training flag and rules stay the same
    walk        one walk of the step's graph from its logits, by itself
    block       a bare soft_gates() block (it keeps weak references to what its calls return and
                walks at its exit) against the same forward pass under the mode without tracking

Random weights, eval mode. Each round times everything once; a ratio is the median over rounds.
Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, next to this script)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pullbacks  # noqa: E402
from pullbacks.core.graph import walk  # noqa: E402
from pullbacks.core.mode import SoftGateMode  # noqa: E402
from pullbacks.core.options import GateOptions  # noqa: E402
from pullbacks.core.table import rules_in_effect  # noqa: E402


def _time(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def measure(name: str, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.rand(1, 3, size, size)
    rules = rules_in_effect()

    def step():
        pullbacks.excitation_pullback(model, x, 3)

    def graph():
        xs = x.clone().requires_grad_(True)
        mode = SoftGateMode(GateOptions())
        mode.wrt = (xs,)
        with mode:
            out = model(xs)
        return out, xs

    def block(track: bool):
        xs = x.clone().requires_grad_(True)
        mode = SoftGateMode(GateOptions(), track=track)
        with mode:
            model(xs)
        return mode.coverage

    out, xs = graph()
    nodes = len(_nodes(out.grad_fn))
    step()  # warm up (and the reading remembered for later steps)
    rows = {"step": [], "walk": [], "tracked": [], "untracked": []}
    for _ in range(repeats):
        rows["step"].append(_time(step))
        rows["walk"].append(_time(lambda: walk([out], rules, (xs,))))
        rows["tracked"].append(_time(lambda: block(True)))
        rows["untracked"].append(_time(lambda: block(False)))
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "model": name,
        "nodes": nodes,
        "step_ms": 1e3 * med["step"],
        "walk_ms": 1e3 * med["walk"],
        "walk/step": med["walk"] / med["step"],
        "block": med["tracked"] / med["untracked"],
    }


def _nodes(root) -> set:
    seen, stack = set(), [root]
    while stack:
        n = stack.pop()
        if n is not None and n not in seen:
            seen.add(n)
            stack.extend(c for c, _ in n.next_functions)
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "densenet121"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(
        f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{datetime.date.today()}, {a.size} px, batch 1, median of {a.repeats}\n"
    )
    print("| model | graph nodes | step (ms) | walk (ms) | walk / step | tracked block / untracked |")
    print("|---|---|---|---|---|---|")
    for name in a.models:
        r = measure(name, a.size, a.repeats)
        print(
            f"| {r['model']} | {r['nodes']} | {r['step_ms']:.1f} | {r['walk_ms']:.2f} | {r['walk/step']:.3f} "
            f"| {r['block']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
