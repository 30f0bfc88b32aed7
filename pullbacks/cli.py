"""Command line: ``pullbacks grid | explain``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("pullbacks: the grid command is coming soon")
    return 0


if __name__ == "__main__":
    sys.exit(main())
