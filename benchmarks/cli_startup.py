"""How fast the command line answers: ``pullbacks --help``, a sub-command's ``--help`` and an
argument error, each as a fresh process (``python -m pullbacks ...``), against importing torch.

    python benchmarks/cli_startup.py                 # median of 5 runs each
    python benchmarks/cli_startup.py --repeats 9

The goal (docs: issue "a command line that answers at once"): each under 1.0 s on 2 cores, where
importing torch alone takes seconds. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, next to this script)

CASES = {
    "pullbacks --help": ["-m", "pullbacks", "--help"],
    "pullbacks grid --help": ["-m", "pullbacks", "grid", "--help"],
    "pullbacks evaluate --help": ["-m", "pullbacks", "evaluate", "--help"],
    "pullbacks grid --steps 0 (an error)": ["-m", "pullbacks", "grid", "--steps", "0"],
    "import torch (for comparison)": ["-c", "import torch"],
    "import torch, torchvision": ["-c", "import torch, torchvision"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    import torch  # for the header only, after nothing else is timed in this process

    print(
        f"{cpu_name()}, torch {torch.__version__}, Python {sys.version.split()[0]}, {datetime.date.today()}, "
        f"median of {a.repeats} fresh processes\n"
    )
    print("| command | seconds |")
    print("|---|---|")
    for name, args in CASES.items():
        times = []
        for _ in range(a.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True)
            times.append(time.perf_counter() - start)
        print(f"| `{name}` | {statistics.median(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
