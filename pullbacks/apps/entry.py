"""The ``pullbacks`` command's entry point: imports the command line itself, so that Ctrl-C
while torch loads is one line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("pullbacks: interrupted", file=sys.stderr)
        return 130
    return run(argv)
