"""The command line answers at once: ``--help``, every sub-command's ``--help`` and argument
errors are handled by a parser that does not import torch, built from facts that are written
from the package's declarations (and checked equal to them here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pullbacks.apps import facts

COMMANDS = ["grid", "explain", "explain-text", "app", "evaluate"]
ERRORS = {  # arguments -> what the one line must say
    ("grid", "--steps", "0"): "--steps: must be an integer >= 1, got 0",
    ("grid", "--temperature", "-1"): "--temperature: must be a finite number > 0",
    ("grid", "--gate", "tanh"): "--gate: invalid choice: 'tanh'",
    ("grid", "--clip", "1,-1"): "--clip",
    ("grid", "--eps", "big"): "--eps",
    ("explain",): "the following arguments are required: image, --target",
    ("app", "--port", "70000"): "a port is 1-65535",
    ("app", "--device", "gpu"): "unknown device 'gpu'",
    ("evaluate", "--methods", "pullbak"): "unknown method 'pullbak' (did you mean 'pullback'",
    ("evaluate", "--metrics", "randomisation,focuss"): "unknown metric 'focuss'",
    ("evaluate", "--mosaics", "-2"): "--mosaics",
    ("grid", "--no-such-flag"): "unrecognized arguments: --no-such-flag",
}

PROBE = """
import sys
from pullbacks.apps.entry import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("TORCH", "torch" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)


def test_the_facts_are_the_declarations():
    """facts.json is what ``python -m pullbacks.apps.facts`` writes from the declarations today."""
    assert facts.facts() == json.loads(json.dumps(facts.generate())), "run: python -m pullbacks.apps.facts"


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], *[[c, "--help"] for c in COMMANDS], ["--version"]])
def test_help_is_answered_without_importing_torch(args):
    done = _run(*args)
    assert done.returncode == 0 and "TORCH False" in done.stderr, done.stderr
    assert "usage: pullbacks" in done.stdout or "pullbacks 0" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args", list(ERRORS))
def test_argument_errors_are_one_line_without_importing_torch(args):
    done = _run(*args)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("TORCH")]
    assert done.returncode == 2 and "TORCH False" in done.stderr, done.stderr
    assert ERRORS[args] in lines[-1] and "Traceback" not in done.stderr
