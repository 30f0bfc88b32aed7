"""What the command line's parser needs to know of the package, readable without torch.

``facts.json`` beside this file holds the options' declarations (``options.FIELDS``), the rule
table's default temperatures, the registered models, and the evaluation's methods, metrics and
settings' defaults. It is written from those declarations themselves by
``python -m pullbacks.apps.facts``, and a test keeps it equal to them; so the parser
(:mod:`.parser`) answers ``--help`` and argument errors before torch is imported, while
everything stays declared once.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("facts.json")


def generate() -> dict[str, Any]:
    """The facts, read from the declarations (imports torch)."""
    from ..core import options
    from ..core.table import default_temperatures
    from ..evaluation.evaluate import METRICS
    from ..evaluation.methods import DEFAULT_METHODS, METHODS, Settings
    from ..evaluation.runner import FOCUS, RECORDS
    from ..models import DEFAULT_MODEL, available_models
    from ..sources import GROUNDTRUTH

    s = Settings()
    return {
        "fields": {
            name: {"help": f.help, "kind": f.kind, "choices": list(f.choices), "none": f.none}
            for name, f in options.FIELDS.items()
        },
        "temperatures": default_temperatures(),
        "models": available_models(),
        "default_model": DEFAULT_MODEL,
        "methods": list(METHODS),
        "default_methods": list(DEFAULT_METHODS),
        "metrics": {name: m.needs for name, m in METRICS.items()},
        "settings": {k: getattr(s, k) for k in ("batch_size", "blocks", "ig_steps", "smoothgrad_samples")},
        "groundtruth": GROUNDTRUTH,
        "focus": FOCUS,
        "records": RECORDS,
    }


@functools.lru_cache(maxsize=1)
def facts() -> dict[str, Any]:
    """The committed facts (``facts.json``)."""
    return json.loads(PATH.read_text(encoding="utf-8"))


def write() -> Path:
    """Write ``facts.json`` from the declarations."""
    PATH.write_text(json.dumps(generate(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return PATH


if __name__ == "__main__":
    print(write())
