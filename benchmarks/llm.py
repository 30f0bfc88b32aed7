"""Time and peak memory of a pullback on a language model, against a vanilla backward: a
random-weight Llama-architecture causal LM (hidden 512, 8 layers, GQA 8/4 heads, vocabulary
32 000: ≈ 56 M parameters, the issue's configuration), sdpa attention, batch 1, the gradient of
the last position's next-token logit with respect to the input embeddings.

    python benchmarks/llm.py                       # 512 and 2048 tokens, one thread
    python benchmarks/llm.py --tokens 2048 --repeats 3

Each case runs in a fresh process, so that its peak resident memory (``ru_maxrss``) is its own;
the baseline process (the model built, nothing run) is subtracted. Cases: ``vanilla``,
``excitation`` (the seed recipe) and ``semantic`` (the follow-up's, held attention through the
SDPA kernel). Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, next to this script)

ROOT = Path(__file__).resolve().parent.parent
CASES = ("baseline", "vanilla", "excitation", "semantic")

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch, transformers
torch.set_num_threads({threads})
transformers.logging.set_verbosity_error()
import pullbacks
from pullbacks.text import token_gradient
from pullbacks.core.options import GateOptions
config = transformers.LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                                  num_attention_heads=8, num_key_value_heads=4, attn_implementation="sdpa")
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(config).eval().requires_grad_(False)
ids = torch.randint(0, 32000, (1, {tokens}))
e = model.get_input_embeddings()(ids)
mask = torch.ones_like(ids)
case = {case!r}
times = []
for _ in range({repeats} if case != "baseline" else 0):
    start = time.perf_counter()
    gates = None if case == "vanilla" else GateOptions(recipe=case)
    token_gradient(model, e, mask, torch.tensor([7]), gates)
    times.append(time.perf_counter() - start)
print(json.dumps({{"case": case, "seconds": min(times) if times else 0.0,
                   "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run(case: str, tokens: int, repeats: int, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT), threads=threads, tokens=tokens, case=case, repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    import torch

    print(
        f"{cpu_name()}, torch {torch.__version__}, {a.threads} thread(s), {datetime.date.today()}, "
        f"fastest of {a.repeats}; memory: peak RSS above the built model\n"
    )
    print("| tokens | case | seconds | × vanilla | peak MiB | × vanilla |")
    print("|---|---|---|---|---|---|")
    for n in a.tokens:
        rows = {c: run(c, n, a.repeats, a.threads) for c in CASES}
        base = rows["baseline"]["peak_mib"]
        v = rows["vanilla"]
        for c in CASES[1:]:
            r = rows[c]
            mem, vmem = r["peak_mib"] - base, v["peak_mib"] - base
            print(
                f"| {n} | {c} | {r['seconds']:.2f} | {r['seconds'] / v['seconds']:.2f} | {mem:.0f} | "
                f"{mem / vmem:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
