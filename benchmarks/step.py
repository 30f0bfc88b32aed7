"""Cost of one excitation-pullback step against one vanilla gradient step.

    python benchmarks/step.py                      # six models, batch 1 and 8, 1 and 2 threads
    python benchmarks/step.py --update BENCHMARKS.md   # the same, and rewrite the table there
    python benchmarks/step.py --models resnet50 --batch 8 --threads 1 --repeats 20 --frozen

Both steps take the input gradient of ``sum_i logits[i, t_i]`` on the same model, batch
and targets:

    vanilla   x = inputs.detach().requires_grad_(True); logits = model(x)
              torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    pullback  pullbacks.core.pullback.target_gradient(model, inputs, t, GateOptions(temperature=0.3))

Time: the two steps run interleaved in one process (A B A B ..., after a warm-up); the
table gives the median wall time of each, the median of the per-pair ratios
pullback/vanilla with their min-max, the same median ratio for the process's CPU time
(``time.process_time``), and the ratio of the fastest pullback step to the fastest
vanilla step (the least disturbed runs, for machines shared with other work).

Peak memory: on CPU, a fresh subprocess per (model, method) builds the model and the
input, runs one small warm-up step (1x3x64x64, so that libraries and kernels are loaded)
and then reports the growth of the process's peak RSS over one full step,
above the RSS just before it (``VmHWM`` after resetting it through
``/proc/self/clear_refs``; ``ru_maxrss`` is no use here, a child inherits its parent's
through ``exec``). glibc is asked to serve every allocation above 64 KiB by
``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so that freed buffers leave the RSS and the peak
follows the live tensors. On CUDA: ``torch.cuda.max_memory_allocated`` growth over one
step. "saved" is the size of the distinct non-parameter tensors autograd keeps between
forward and backward (counted with ``saved_tensors_hooks``), the deterministic part of
the peak.

Random weights (``weights=None``); nothing is downloaded. Not a test: it prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, next to this script)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pullbacks.core.mode import SoftGateMode  # noqa: E402
from pullbacks.core.options import GateOptions  # noqa: E402
from pullbacks.core.pullback import target_gradient  # noqa: E402

DEFAULT_MODELS = ("resnet50", "vgg11_bn", "densenet121", "efficientnet_lite0", "convnext_tiny", "vit_b_16")
METHODS = ("vanilla", "pullback")
FIXED_SIZE = ("vit_b_16",)  # models that take only --size inputs (the warm-up step uses them too)


# ----------------------------------------------------------------------------- setup


def build_model(name: str, device: torch.device, frozen: bool) -> torch.nn.Module:
    """A random-weight model in eval mode; parameters trainable unless ``frozen``."""
    torch.manual_seed(0)
    if name == "efficientnet_lite0":
        try:
            from pullbacks.models import load_model
        except ImportError:
            import timm

            model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        else:
            model = load_model("efficientnet_lite0", weights=None, seed=0).model
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
    model = model.to(device).eval()
    model.requires_grad_(not frozen)
    return model


def make_batch(batch: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    return x, t


def vanilla_step(model, inputs, t, temperature):
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    return grad


def pullback_step(model, inputs, t, temperature):
    return target_gradient(model, inputs, t, GateOptions(temperature=temperature))


STEPS = {"vanilla": vanilla_step, "pullback": pullback_step}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ time


def time_interleaved(model, x, t, device, temperature, repeats, warmup):
    """Wall and process-CPU seconds per step for each method, runs interleaved A B A B ..."""
    times = {m: [] for m in METHODS}
    cpu = {m: [] for m in METHODS}
    for i in range(warmup + repeats):
        for method in METHODS:
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            grad = STEPS[method](model, x, t, temperature)
            sync(device)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            del grad
            if i >= warmup:
                times[method].append(elapsed)
                cpu[method].append(elapsed_cpu)
    return times, cpu


# ---------------------------------------------------------------------------- memory


def saved_mib(model, x, t, method, temperature) -> float:
    """MiB of distinct non-parameter storages autograd saves in the forward pass."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    own |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    xx = x.detach().requires_grad_(True)
    mode = SoftGateMode(GateOptions(temperature=temperature)) if method == "pullback" else contextlib.nullcontext()
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), mode:
        logits = model(xx)
    del logits
    return sum(seen.values()) / 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def probe_memory(args) -> dict:
    """Run inside the subprocess: peak growth (MiB) of one step of ``args.probe``."""
    device = torch.device(args.device)
    model = build_model(args.probe_model, device, args.frozen)
    step = STEPS[args.probe]
    small, small_t = make_batch(1, args.size if args.probe_model in FIXED_SIZE else 64, device)
    step(model, small, small_t, args.temperature)  # load kernels, thread pools
    x, t = make_batch(args.batch[0], args.size, device)
    del small, small_t
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        grad = step(model, x, t, args.temperature)
        torch.cuda.synchronize(device)
        return {"peak_mib": (torch.cuda.max_memory_allocated(device) - before) / 2**20, "exact": True}
    # VmHWM, not ru_maxrss: a spawned child inherits its parent's ru_maxrss through exec
    exact = _reset_peak_rss()
    rss = _status_kib("VmRSS")
    grad = step(model, x, t, args.temperature)
    peak = _status_kib("VmHWM")
    del grad
    return {"peak_mib": (peak - rss) / 1024, "exact": exact and peak > rss}


def measure_memory(args, name: str, method: str) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--probe",
        method,
        "--probe-model",
        name,
        "--batch",
        str(args.batch[0]),
        "--size",
        str(args.size),
        "--device",
        args.device,
        "--temperature",
        str(args.temperature),
        "--threads",
        str(args.threads[0]),
    ]
    if args.frozen:
        cmd.append("--frozen")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="torchvision model names or efficientnet_lite0 (default: %(default)s)",
    )
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="image side (default: %(default)s)")
    p.add_argument(
        "--repeats", type=int, default=7, help="timed (vanilla, pullback) pairs per model (default: %(default)s)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed pairs first (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch.set_num_threads values on CPU, one table each (default: %(default)s)",
    )
    p.add_argument("--temperature", type=float, default=0.3, help="pullback temperature (default: %(default)s)")
    p.add_argument(
        "--frozen", action="store_true", help="parameters requires_grad_(False) (default: as constructed, trainable)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--update",
        metavar="FILE",
        help="also write the tables into FILE between <!-- step-tables --> and <!-- /step-tables -->",
    )
    p.add_argument(
        "--keep-subnormals",
        action="store_true",
        help="switch off the gates' flushing of subnormal floats (for the before/after comparison)",
    )
    p.add_argument("--probe", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--probe-model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def run_config(args, device, threads: int, batch: int) -> list[dict]:
    """One table: every model at ``batch`` on ``threads`` threads."""
    torch.set_num_threads(threads)
    one = argparse.Namespace(**{**vars(args), "batch": [batch], "threads": [threads]})
    rows = []
    for name in args.models:
        model = build_model(name, device, args.frozen)
        x, t = make_batch(batch, args.size, device)
        times, cpu = time_interleaved(model, x, t, device, args.temperature, args.repeats, args.warmup)
        ratios = [p / v for v, p in zip(times["vanilla"], times["pullback"])]
        cpu_ratios = [p / v for v, p in zip(cpu["vanilla"], cpu["pullback"])]
        row = {
            "model": name,
            "vanilla_s": statistics.median(times["vanilla"]),
            "pullback_s": statistics.median(times["pullback"]),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "cpu_ratio": statistics.median(cpu_ratios),
            "best_ratio": min(times["pullback"]) / min(times["vanilla"]),
        }
        if not args.no_memory:
            row["saved"] = {m: saved_mib(model, x, t, m, args.temperature) for m in METHODS}
        del model
        if not args.no_memory:
            row["peak"] = {m: measure_memory(one, name, m) for m in METHODS}
        rows.append(row)
        print(f"  done {name}, batch {batch}, {threads} thread(s): {row['ratio']:.3f}", file=sys.stderr, flush=True)
    return rows


def keep_subnormals() -> None:
    """The gates as they were before the flush (for the before/after table only)."""
    from pullbacks.core.rules import pool, relu

    relu.flush_subnormals_ = pool.flush_subnormals_ = lambda t: t


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.keep_subnormals:
        keep_subnormals()
    if args.probe:
        torch.set_num_threads(args.threads[0])
        print(json.dumps(probe_memory(args)))
        return
    device = torch.device(args.device)
    threads = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    lines = [
        f"{where}; torch {torch.__version__}; {datetime.date.today().isoformat()}; "
        f"`python benchmarks/step.py {' '.join(sys.argv[1:])}`".replace(" `", " `", 1).rstrip(),
        "",
    ]
    for n in threads:
        for batch in args.batch:
            rows = run_config(args, device, n, batch)
            lines += table(args, device, rows, n, batch) + [""]
    text = "\n".join(lines)
    print(text)
    if args.update:
        path = Path(args.update)
        doc = path.read_text(encoding="utf-8")
        start, end = "<!-- step-tables -->", "<!-- /step-tables -->"
        if start not in doc or end not in doc:
            sys.exit(f"{path} has no {start} ... {end} block to replace")
        head, rest = doc.split(start, 1)
        path.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")
        print(f"wrote the tables into {path}", file=sys.stderr)


def table(args, device, rows, threads, batch) -> list[str]:
    where = "GPU" if device.type == "cuda" else f"{threads} thread{'s' if threads != 1 else ''}"
    out = [
        f"Batch {batch} x 3 x {args.size} x {args.size} float32, {where}, parameters "
        f"{'frozen' if args.frozen else 'trainable'}, T = {args.temperature}; median of {args.repeats} "
        f"interleaved pairs after {args.warmup} warm-up pairs.",
        "",
    ]
    head = "| model | vanilla s | pullback s | time ratio (min–max) | CPU-time ratio | fastest/fastest |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if not args.no_memory:
        head += " peak MiB vanilla | peak MiB pullback | peak ratio | saved MiB vanilla → pullback |"
        rule += "---:|---:|---:|---:|"
    out += [head, rule]
    for r in rows:
        line = (
            f"| {r['model']} | {r['vanilla_s']:.3f} | {r['pullback_s']:.3f} | "
            f"**{r['ratio']:.2f}×** ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {r['cpu_ratio']:.2f}× | "
            f"{r['best_ratio']:.2f}× |"
        )
        if "peak" in r:
            pv, pp = r["peak"]["vanilla"], r["peak"]["pullback"]
            mark = lambda m: "" if m["exact"] else " (?)"  # noqa: E731
            sv, sp = r["saved"]["vanilla"], r["saved"]["pullback"]
            line += (
                f" {pv['peak_mib']:.0f}{mark(pv)} | {pp['peak_mib']:.0f}{mark(pp)} | "
                f"**{pp['peak_mib'] / max(pv['peak_mib'], 1e-9):.2f}×** | {sv:.0f} → {sp:.0f} ({sp / sv:.2f}×) |"
            )
        out.append(line)
    if any("peak" in r and not (r["peak"]["vanilla"]["exact"] and r["peak"]["pullback"]["exact"]) for r in rows):
        out += ["", "(?) the peak RSS could not be reset before the step; the value is a lower bound."]
    return out


if __name__ == "__main__":
    main()
