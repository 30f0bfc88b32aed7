"""Where the extra time of a pullback step goes: the operators whose total CPU time differs
most between a pullback step and a vanilla step (torch.profiler, same model and batch).

    python benchmarks/profile_step.py --model resnet50 --batch 1 --threads 2

Not a test: it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step import STEPS, build_model, make_batch  # noqa: E402


def op_times(step, model, x, t, repeats: int) -> dict[str, float]:
    """Self CPU milliseconds per step, by operator name."""
    for _ in range(2):
        step(model, x, t, 0.3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step(model, x, t, 0.3)
    out: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        out[e.key] += e.self_cpu_time_total / 1000 / repeats
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model, torch.device("cpu"), frozen=False)
    x, t = make_batch(args.batch, args.size, torch.device("cpu"))
    vanilla = op_times(STEPS["vanilla"], model, x, t, args.repeats)
    pullback = op_times(STEPS["pullback"], model, x, t, args.repeats)
    total_v, total_p = sum(vanilla.values()), sum(pullback.values())
    print(
        f"{args.model}, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}: "
        f"self CPU time per step {total_v:.1f} ms vanilla, {total_p:.1f} ms pullback "
        f"({total_p / total_v:.2f}×)\n"
    )
    print("| operator | vanilla ms | pullback ms | difference ms |")
    print("|---|---:|---:|---:|")
    keys = sorted(set(vanilla) | set(pullback), key=lambda k: -abs(pullback.get(k, 0) - vanilla.get(k, 0)))
    for k in keys[: args.rows]:
        v, q = vanilla.get(k, 0.0), pullback.get(k, 0.0)
        print(f"| `{k}` | {v:.2f} | {q:.2f} | {q - v:+.2f} |")


if __name__ == "__main__":
    main()
