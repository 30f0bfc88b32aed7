"""The per-call cost of the soft gates, where launches dominate: one input-gradient step by four
mechanisms, as ratios to the vanilla step, at batch 1 on tiny (32×32) and full (224×224) inputs.

    python benchmarks/overhead.py                       # the table of BENCHMARKS.md, 1 thread
    python benchmarks/overhead.py --models resnet18 --sizes 32 --repeats 9 --threads 2
    python benchmarks/overhead.py --device cuda        # where launches dominate for real

    vanilla     torch.autograd.grad of the target logit (the denominator)
    empty mode  the same inside a TorchFunctionMode that forwards every call and does nothing
                else: the floor of any mechanism that intercepts calls
    pullbacks   the package's step (target_gradient under soft gates, T 0.3)
    swap        a module-swap mechanism of our own (the follow-up's idea): a copy of the model
                whose nn.ReLU / nn.GELU / nn.LayerNorm / nn.MaxPool2d modules are replaced by
                straight-through modules, y = f(x).detach() + S - S.detach(); no mode

Random weights, frozen parameters, eval mode. Each round times every mechanism once in a
shuffled order; a mechanism's ratio is the median over rounds of its time over the round's
vanilla time. "calls" is the number of torch calls one forward pass makes (the empty mode
counts them). Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, next to this script)
from torch import nn
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pullbacks.core.options import GateOptions  # noqa: E402
from pullbacks.core.pullback import target_gradient  # noqa: E402

T = 0.3
MODELS = ("resnet18", "resnet50", "densenet121", "convnext_tiny", "vit_b_16")


class EmptyMode(TorchFunctionMode):
    """Forwards every call; counts them."""

    calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        EmptyMode.calls += 1
        return func(*args, **(kwargs or {}))


class STReLU(nn.Module):
    def forward(self, x):
        s = T * F.softplus(x / T)
        return x.clamp(min=0).detach() + s - s.detach()


class STGELU(nn.Module):
    def forward(self, x):
        gate = 0.5 * (1 + torch.erf(x / 2**0.5))
        return F.gelu(x).detach() + x * gate.detach() - (x * gate).detach()


class STLayerNorm(nn.Module):
    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        self.ln = ln

    def forward(self, x):
        channels_first = type(self.ln).__name__ == "LayerNorm2d"  # torchvision's ConvNeXt: permutes around
        xs = x.permute(0, 2, 3, 1) if channels_first else x
        dims = tuple(range(-len(self.ln.normalized_shape), 0))
        var, mean = torch.var_mean(xs.detach(), dim=dims, keepdim=True, correction=0)
        s = (xs - mean) * torch.rsqrt(var + self.ln.eps) * self.ln.weight + self.ln.bias
        s = s.permute(0, 3, 1, 2) if channels_first else s
        return self.ln(x).detach() + s - s.detach()


class STPool(nn.Module):
    """Detached softmax weights over each window (the follow-up's preferred pool), straight through."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        k, s, p = self.pool.kernel_size, self.pool.stride, self.pool.padding
        n, c, h, w = x.shape
        out = self.pool(x)
        cols = F.unfold(x.reshape(n * c, 1, h, w), k, padding=p, stride=s)
        soft = (torch.softmax(cols.detach() / T, dim=1) * cols).sum(1).reshape(out.shape)
        return out.detach() + soft - soft.detach()


def swapped(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, STReLU())
            elif isinstance(child, nn.GELU):
                setattr(parent, name, STGELU())
            elif isinstance(child, nn.LayerNorm):
                setattr(parent, name, STLayerNorm(child))
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, STPool(child))
    return out


def _grad(model, x, t):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, t], x)
    return g


def mechanisms(model: nn.Module) -> dict:
    gates = GateOptions(temperature=T)
    other = swapped(model)
    target = torch.tensor([1], device=next(model.parameters()).device)

    def empty(x, t):
        with EmptyMode():
            return _grad(model, x, t)

    return {
        "vanilla": lambda x, t: _grad(model, x, t),
        "empty mode": empty,
        "pullbacks": lambda x, t: target_gradient(model, x, target, gates),
        "swap": lambda x, t: _grad(other, x, t),
    }


CPU = torch.device("cpu")


def build(name: str, device: torch.device = CPU) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    return model.requires_grad_(False).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, size: int, repeats: int, warmup: int, device: torch.device = CPU) -> dict:
    model = build(name, device)
    x = torch.randn(1, 3, size, size, device=device)
    steps = mechanisms(model)
    EmptyMode.calls = 0
    with torch.no_grad(), EmptyMode():
        model(x)
    calls = EmptyMode.calls
    for _ in range(warmup):
        for step in steps.values():
            step(x, 1)
    ratios: dict[str, list[float]] = {k: [] for k in steps if k != "vanilla"}
    base = []
    order = list(steps)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        times = {}
        for k in order:
            _sync(device)
            start = time.perf_counter()
            steps[k](x, 1)
            _sync(device)
            times[k] = time.perf_counter() - start
        base.append(times["vanilla"])
        for k in ratios:
            ratios[k].append(times[k] / times["vanilla"])
    return {
        "model": name,
        "size": size,
        "calls": calls,
        "vanilla ms": 1000 * statistics.median(base),
        **{k: statistics.median(v) for k, v in ratios.items()},
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | input | calls | vanilla ms | empty mode | **pullbacks** | swap |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']}×{r['size']} | {r['calls']} | {r['vanilla ms']:.1f} | "
            f"{r['empty mode']:.2f}× | **{r['pullbacks']:.2f}×** | {r['swap']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 224])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.models:
        for size in args.sizes:
            if name.startswith("vit") and size != 224:
                continue  # a ViT takes its own size only
            rows.append(measure(name, size, args.repeats, args.warmup, device))
            print(f"  {name} {size}: pullbacks {rows[-1]['pullbacks']:.2f}×", file=sys.stderr, flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}; {args.threads} thread(s)"
    print(
        f"{where}; torch {torch.__version__}; batch 1; "
        f"{datetime.date.today().isoformat()}; median of {args.repeats} shuffled rounds; "
        f"`python benchmarks/overhead.py {' '.join(argv or sys.argv[1:])}`".rstrip()
    )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
