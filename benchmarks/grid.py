"""Wall time of the paper's class x target grid: batched pairs against one column at a time.

    python benchmarks/grid.py                          # resnet50, batches of 6 and 30
    python benchmarks/grid.py --model vgg11_bn --batch 10 --repeats 2

The grid is 5 images x 6 targets, ``--steps`` steps of gradient ascent each (docs/method.md,
"The ascent", "The figure"). Every (image, target) pair is an independent sample, so the grid can be computed

    batched     all 30 pairs through ``gradient_ascent``, ``--batch`` pairs per call
                (what ``pullbacks.figures.grid.class_target_grid`` does, without drawing);
    by column   one target column at a time: 5 images per call, 6 calls.

Both give the same cells; the runs are interleaved (column, batched, column, batched, ...)
and the table gives medians. Random images in [-1, 1], random weights, float32. Not a
test: it prints a Markdown table. ``--figure`` also times ``class_target_grid`` end to
end (with drawing the figure), when ``pullbacks/grid.py`` provides it.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pullbacks import gradient_ascent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step import build_model, sync  # noqa: E402

ROWS, COLS = 5, 6


def by_column(model, images, targets, args):
    cols = [
        gradient_ascent(
            model,
            images,
            torch.full((ROWS,), t, device=images.device),
            steps=args.steps,
            method=args.method,
            temperature=args.temperature,
        )
        for t in targets
    ]
    return torch.stack(cols, dim=1)  # (R, C, 3, H, W)


def batched(model, images, targets, args, batch):
    pair_images = images.repeat_interleave(COLS, dim=0)  # row-major pairs, as class_target_grid
    pair_targets = torch.tensor(targets, device=images.device).repeat(ROWS)
    out = [
        gradient_ascent(
            model,
            pair_images[i : i + batch],
            pair_targets[i : i + batch],
            steps=args.steps,
            method=args.method,
            temperature=args.temperature,
        )
        for i in range(0, ROWS * COLS, batch)
    ]
    return torch.cat(out).view(ROWS, COLS, *images.shape[1:])


def with_figure(model, images, targets, args, batch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pullbacks.figures.grid import class_target_grid

    grid = class_target_grid(
        model,
        images,
        targets,
        row_names=[str(i) for i in range(ROWS)],
        target_names=[str(t) for t in targets],
        method=args.method,
        steps=args.steps,
        temperature=args.temperature,
        batch_size=batch,
        progress=False,
    )
    plt.close(grid.figure)
    return grid.perturbed


def timed(device, fn, *a):
    sync(device)
    start = time.perf_counter()
    out = fn(*a)
    sync(device)
    return time.perf_counter() - start, out


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="resnet50", help="torchvision name or efficientnet_lite0 (default: %(default)s)")
    p.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[6, 30],
        help="pairs per gradient_ascent call in the batched path (default: %(default)s)",
    )
    p.add_argument("--size", type=int, default=224, help="image side (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="ascent steps (default: %(default)s)")
    p.add_argument("--method", default="pullback", choices=("pullback", "gradient"))
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--frozen", action="store_true", help="parameters requires_grad_(False)")
    p.add_argument("--figure", action="store_true", help="also time class_target_grid with its figure")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(args.model, device, args.frozen)
    g = torch.Generator().manual_seed(2)
    images = (torch.rand(ROWS, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
    targets = [0, 482, 497, 569, 574, 9]  # the paper's rows and ostrich

    runs = {"column": lambda: by_column(model, images, targets, args)}
    for b in args.batch:
        runs[f"batch {b}"] = lambda b=b: batched(model, images, targets, args, b)
    if args.figure:
        runs[f"figure {args.batch[0]}"] = lambda: with_figure(model, images, targets, args, args.batch[0])

    reference = runs["column"]()  # warm-up, and the cells every path must reproduce
    times = {k: [] for k in runs}
    worst = 0.0
    for r in range(args.repeats):
        for key, fn in runs.items():
            sec, out = timed(device, fn)
            times[key].append(sec)
            worst = max(worst, (out - reference).abs().max().item())
        print(
            f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
            file=sys.stderr,
            flush=True,
        )

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"Grid {ROWS} images x {COLS} targets x {args.steps} steps ({args.method}, T = {args.temperature}), "
        f"{args.model} random weights, {args.size}x{args.size} float32, {where}; torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}; median of {args.repeats} interleaved rounds. "
        f"Largest cell difference between paths: {worst:.1e}.\n"
    )
    col = statistics.median(times["column"])
    print("| path | calls | wall s | vs by column |")
    print("|---|---:|---:|---:|")
    print(f"| by column (5 images per call) | {COLS} | {col:.1f} | 1.00× |")
    for key in runs:
        if key == "column":
            continue
        b = int(key.split()[-1])
        name = (
            f"class_target_grid, batch {b}, with figure" if key.startswith("figure") else f"batched, {b} pairs per call"
        )
        t = statistics.median(times[key])
        print(f"| {name} | {-(-ROWS * COLS // b)} | {t:.1f} | {t / col:.2f}× |")


if __name__ == "__main__":
    main()
