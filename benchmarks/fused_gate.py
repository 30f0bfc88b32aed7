"""Would a compiled kernel make the gate cheaper? One ResNet gate's backward, eager against
``torch.compile`` (inductor, dynamic shapes), on the shapes of ResNet50's gates.

    python benchmarks/fused_gate.py                  # batch 1 and 8, 2 threads
    python benchmarks/fused_gate.py --threads 1

The eager form is what the package runs for ``relu(bn(x) + identity)`` with a replay:
``torch.batch_norm`` (the replay), ``add_`` (the residual), ``softplus_backward`` (the gate,
``grad * sigmoid(z / T)``) and ``hardshrink`` (the subnormal flush): four passes. The
compiled form is the same arithmetic written as one expression, which inductor fuses into
one loop. Both give the same numbers (checked). Prints the median microseconds of each and
the compile time of the first call. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

TINY = torch.finfo(torch.float32).tiny
SHAPES = ((256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7))  # the widest gate of each stage


def eager(grad, x, mean, var, weight, bias, identity, beta: float):
    z = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, 1e-5, False).add_(identity)
    out = torch.ops.aten.softplus_backward.grad_input(grad, z, beta, 20.0, grad_input=z)
    return torch.hardshrink(out, TINY, out=out)


def fused(grad, x, mean, var, weight, bias, identity, beta: float):
    scale = (weight * torch.rsqrt(var + 1e-5)).view(1, -1, 1, 1)
    z = (x - mean.view(1, -1, 1, 1)) * scale + bias.view(1, -1, 1, 1) + identity
    g = grad * torch.sigmoid(z * beta)
    return torch.where(g.abs() < TINY, torch.zeros_like(g), g)


def median_us(f, args, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    compiled = torch.compile(fused, dynamic=True)
    print(f"torch {torch.__version__}, {a.threads} thread(s); T = 0.3\n")
    print("| shape | eager µs | compiled µs | compiled / eager | first compiled call s |")
    print("|---|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    for n in a.batches:
        for c, h, w in SHAPES:
            x, identity, grad = (torch.randn(n, c, h, w, generator=g) for _ in range(3))
            mean, bias = torch.randn(c, generator=g), torch.randn(c, generator=g)
            var, weight = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
            args = (grad, x, mean, var, weight, bias, identity, 1 / 0.3)
            start = time.perf_counter()
            got = compiled(*args)
            first = time.perf_counter() - start
            torch.testing.assert_close(got, eager(*args), rtol=1e-4, atol=1e-6)
            e1, c1, e2, c2 = (median_us(f, args, a.repeats) for f in (eager, compiled, eager, compiled))
            e, cc = min(e1, e2), min(c1, c2)
            print(f"| {n}×{c}×{h}×{w} | {e:.0f} | {cc:.0f} | {cc / e:.2f}× | {first:.1f} |")


if __name__ == "__main__":
    main()
