"""One pullback step through other implementations of the same rule, against pullbacks.

    python benchmarks/peers.py                         # resnet50 vgg11_bn densenet121, batch 1 and 8, 1 and 2 threads
    python benchmarks/peers.py --models resnet18 --batch 1 --threads 2 --repeats 10

Each implementation takes the input gradient of ``sum_i logits[i, t_i]`` of the same
random-weight model (eval mode, frozen parameters, 224x224). Written here from their
descriptions (none of their code):

    pullbacks      the package (TorchFunctionMode, backward-only gates), T 0.3
    seed-swap      the seed paper's mechanism: a deep copy of the model with its nn.ReLU and
                   nn.MaxPool2d modules swapped for an autograd ReLU (sigmoid gate) and a soft
                   max pool computed in every forward pass with F.unfold (zero-padded windows)
    st-swap        the follow-up's mechanism: module classes swapped for straight-through
                   expressions, y = f(x).detach() + S - S.detach(), S = T softplus(x / T), and the
                   same unfold soft pool straight through
    zennit         zennit's BetaSmooth composite (beta 1/T) when zennit is installed (not a
                   dependency: pip install zennit)
    guided         Captum's GuidedBackprop: a cheaper rule on the same module-hook mechanism

"error" is the relative L2 distance to the float64 result of the rule the implementation
claims: the package's float64 pullback for seed-swap and st-swap (the same rule), for
zennit its rule (sigmoid(z/T) gates, the max pool's ordinary gradient: the package at
pool_temperature 1e-5), for guided its own float64 run. Time: vanilla and method
interleaved (A B A B ...) after a warm-up, the median of the per-pair ratios. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, next to this script)
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pullbacks  # noqa: E402
from pullbacks.core.options import GateOptions  # noqa: E402
from pullbacks.core.pullback import target_gradient  # noqa: E402

T = 0.3


# ----------------------------------------------------------------------------- the seed's mechanism


class _SigmoidGateReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * torch.sigmoid(z / T)


class SeedReLU(nn.Module):
    def forward(self, z):
        return _SigmoidGateReLU.apply(z)


def _unfold_soft_pool(x, pool: nn.MaxPool2d):
    """sum_j softmax(x_j / T) x_j per window, windows from F.unfold (zero padding)."""
    n, c, h, w = x.shape
    k, s, p = pool.kernel_size, pool.stride, pool.padding
    cols = F.unfold(x.reshape(n * c, 1, h, w), k, padding=p, stride=s)  # (n c, k k, L)
    soft = (torch.softmax(cols / T, dim=1) * cols).sum(1)
    out = F.max_pool2d(x, k, s, p, pool.dilation, pool.ceil_mode)
    return soft.reshape(n, c, *out.shape[-2:]), out


class SeedPool(nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        soft, hard = _unfold_soft_pool(x, self.pool)
        return hard.detach() + soft - soft.detach()


class STReLU(nn.Module):
    def forward(self, x):
        s = T * F.softplus(x / T)
        return x.clamp(min=0).detach() + s - s.detach()


def swapped(model: nn.Module, relu: type, pool: type) -> nn.Module:
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, relu())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, pool(child))
    return out


def _gradient(model, x, t):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, t[:, None]).sum(), x)
    return g


# ----------------------------------------------------------------------------- implementations


def implementations(model: nn.Module):
    """name -> (step(x, t) -> gradient, reference(model64, x64, t) -> gradient)."""
    gates = GateOptions(temperature=T)
    ours = lambda m, x, t: target_gradient(m, x, t, gates)  # noqa: E731
    impls = {"pullbacks": (lambda x, t: ours(model, x, t), ours)}
    seed = swapped(model, SeedReLU, SeedPool)
    impls["seed-swap"] = (lambda x, t: _gradient(seed, x, t), ours)
    st = swapped(model, STReLU, SeedPool)
    impls["st-swap"] = (lambda x, t: _gradient(st, x, t), ours)
    try:
        from zennit.composites import BetaSmooth

        def zennit_step(x, t, m=model):
            with BetaSmooth(beta_smooth=1 / T).context(m) as modified:
                return _gradient(modified, x, t)

        hard_pool = GateOptions(temperature=T, pool_temperature=1e-5)
        impls["zennit"] = (zennit_step, lambda m, x, t: target_gradient(m, x, t, hard_pool))
    except ImportError:
        pass
    from captum.attr import GuidedBackprop

    def guided(m):
        return lambda x, t: GuidedBackprop(m).attribute(x.detach().requires_grad_(True), target=t)

    impls["guided"] = (guided(model), lambda m, x, t: guided(m)(x, t))
    return impls


def error(step, reference, model, x, t) -> float:
    try:
        got = step(x, t).double()
    except Exception as e:  # an implementation that fails on this model
        return f"fails ({type(e).__name__})"
    want = reference(copy.deepcopy(model).double(), x.double(), t).double()
    return float((got - want).norm() / want.norm())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, batch: int, threads: int, repeats: int) -> list[dict]:
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval().requires_grad_(False)
    x = torch.rand(batch, 3, 224, 224) * 2 - 1
    t = torch.randint(0, 1000, (batch,))
    rows = []
    for impl, (step, reference) in implementations(model).items():
        err = error(step, reference, model, x[:1], t[:1])
        if isinstance(err, str):
            rows.append(dict(model=name, batch=batch, threads=threads, impl=impl, ratio=None, error=err))
            continue
        vanilla = lambda: _gradient(model, x, t)  # noqa: E731
        for _ in range(2):  # warm-up
            vanilla(), step(x, t)
        ratios = []
        for _ in range(repeats):
            a, b = timed(vanilla), timed(lambda: step(x, t))
            ratios.append(b / a)
        rows.append(
            dict(
                model=name,
                batch=batch,
                threads=threads,
                impl=impl,
                ratio=statistics.median(ratios),
                spread=(min(ratios), max(ratios)),
                error=err,
            )
        )
        print(
            f"{name} batch {batch} threads {threads} {impl}: {rows[-1]['ratio']:.2f}x, error {err:.1e}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def table(rows: list[dict]) -> str:
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    head = "| model | batch | threads | " + " | ".join(impls) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(impls)]
    keys = list(dict.fromkeys((r["model"], r["batch"], r["threads"]) for r in rows))
    for key in keys:
        cells = []
        for impl in impls:
            r = next((r for r in rows if (r["model"], r["batch"], r["threads"]) == key and r["impl"] == impl), None)
            if r is None:
                cells.append("—")
            elif r["ratio"] is None:
                cells.append(r["error"])
            else:
                cells.append(f"{r['ratio']:.2f}× ({r['error']:.0e})")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "vgg11_bn", "densenet121"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    saved = torch.get_num_threads()
    rows = []
    try:
        for name in args.models:
            for batch in args.batch:
                for threads in args.threads:
                    rows += measure(name, batch, threads, args.repeats)
    finally:
        torch.set_num_threads(saved)
    print(
        f"{cpu_name()}, torch {torch.__version__}, pullbacks {pullbacks.__version__}, "
        f"{datetime.date.today().isoformat()}; time per step / vanilla step (relative error to the float64 rule)\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
