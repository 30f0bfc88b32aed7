"""What machine a benchmark ran on: the CPU's model name (``/proc/cpuinfo``), for every table's header."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The ``model name`` line of ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
