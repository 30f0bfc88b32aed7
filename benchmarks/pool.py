"""Cost of the soft max-pool backward against torch's max-pool backward, for the pools of
ResNet50/DenseNet121 (3x3, stride 2, padding 1) and VGG11_BN (2x2, stride 2).

    python benchmarks/pool.py                  # batch 1 and 8, 2 threads
    python benchmarks/pool.py --threads 1 --repeats 50

Three columns per shape: torch's ``max_pool2d_with_indices_backward`` (the vanilla step),
the soft pool's window-sum form (forced on, the whole tensor at once), and its window-by-window form (forced on; it
is what every shape used before the window-sum form existed). By default the package takes
window sums for overlapping windows only (the 3x3 pools), window by window for pools whose
windows tile the input (VGG's 2x2). Median milliseconds
of ``--repeats`` calls after two warm-up calls, random inputs, T = 0.3. Not a test: it
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pullbacks.core.rules.pool as pool_rule  # noqa: E402

SHAPES = (  # (channels, side, kernel, stride, padding): the first pool of each model at 224 x 224
    (64, 112, 3, 2, 1),  # ResNet50, DenseNet121
    (64, 224, 2, 2, 0),  # VGG11_BN, first of five
    (128, 112, 2, 2, 0),  # VGG11_BN, second
)


def median_ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} calls\n")
    print("| input | pool | torch max-pool backward ms | soft, window sums ms | soft, window by window ms |")
    print("|---|---|---:|---:|---:|")
    for batch in args.batch:
        for c, side, k, s, pad in SHAPES:
            x = torch.randn(batch, c, side, side)
            out, indices = F.max_pool2d_with_indices(x, k, s, pad)
            g = torch.randn_like(out)
            vanilla = median_ms(
                lambda: torch.ops.aten.max_pool2d_with_indices_backward(g, x, k, s, pad, 1, False, indices),
                args.repeats,
            )
            window_sums = lambda: pool_rule._pooled(  # noqa: E731
                x,
                g,
                (k, k),
                (s, s),
                (pad, pad),
                0.3,
                "soft",
                torch.empty_like(x),
            )
            soft = median_ms(window_sums, args.repeats)
            limit, pool_rule._POOLED_RANGE = pool_rule._POOLED_RANGE, -1.0  # force the window-by-window form
            try:
                windows = median_ms(lambda: pool_rule.soft_max_pool2d_backward(x, g, k, s, pad, 1, 0.3), args.repeats)
            finally:
                pool_rule._POOLED_RANGE = limit
            print(
                f"| {batch} x {c} x {side} x {side} | {k}x{k}, stride {s}, padding {pad} | {vanilla:.2f} | "
                f"{soft:.2f} | {windows:.2f} |"
            )


if __name__ == "__main__":
    main()
