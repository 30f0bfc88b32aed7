"""The ``pullbacks`` command's entry point: parses the arguments with the torch-free parser
(so that ``--help`` and every argument error answer at once), then imports the commands
(:mod:`.cli`, and torch with them); Ctrl-C while torch loads is one line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from .parser import build_parser

        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        from .cli import run
    except KeyboardInterrupt:
        print("pullbacks: interrupted", file=sys.stderr)
        return 130
    return run(args)
