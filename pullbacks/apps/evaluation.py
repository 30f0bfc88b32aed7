"""``pullbacks evaluate``: its options and the run, over a dataset, resumably, on one
process or under ``torchrun`` (``pullbacks.evaluation.runner``)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..evaluation.evaluate import EVIDENCE, METRICS
from ..evaluation.methods import DEFAULT_METHODS, METHODS, Settings, check_names
from ..evaluation.runner import FOCUS, RECORDS
from ..sources import GROUNDTRUTH
from .arguments import (
    UsageError,
    load,
    writable_folder,
)


def _scaled(settings: Settings) -> Settings:
    """The follow-up's 224-pixel layouts on the generated task's 64 pixels: 16 patches of 16 px,
    infidelity on 32- and 16-px patches, 48 chunks of 256 entries, and the ascent's alpha and eps
    scaled so that each step moves every entry as much as on 224 px."""
    import dataclasses

    from ..groundtruth.task import SCALE

    a = settings.ascent
    ascent = a.replace(alpha=a.alpha * SCALE, eps=None if a.eps is None else a.eps * SCALE)
    return dataclasses.replace(settings, ascent=ascent, patch=16, infidelity_patches=(32, 16), fe_features=256)


def _split(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate (resuming what ``--out`` already holds), then write and print the report."""
    from ..evaluation.data import select
    from ..evaluation.runner import output_error, rank_device, run
    from ..sources import resolve

    try:  # the extras: fail with their install hint before any work
        from ..evaluation import captum, quantus  # noqa: F401
    except ImportError as e:
        raise UsageError(str(e)) from None
    methods = check_names(_split(args.methods), METHODS, "method", DEFAULT_METHODS)  # before loading anything
    generated = len(args.images) == 1 and args.images[0].split(":")[0] == GROUNDTRUTH
    metrics = check_names(
        _split(args.metrics),
        METRICS,
        "metric",
        [k for k, m in METRICS.items() if m.needs == "images" or (generated and m.needs == "masks")],
    )
    if not generated and any(m in EVIDENCE for m in metrics):
        raise UsageError(
            f"{', '.join(m for m in metrics if m in EVIDENCE)} compare maps with the pixels that decide "
            "the class: evaluate generated images whose evidence is known (--images groundtruth:N)"
        )
    if FOCUS in metrics and not args.mosaics:
        raise UsageError("the focus metric runs on mosaics: pass --mosaics N (the authors: 500)")
    writable_folder(args.out, "--out")
    args.device = rank_device(args.device)
    items = select(resolve(args.images, args.imagenette_root), args.limit, args.shuffle_seed)
    if any(it.label is None for it in items):
        print("targets: the model's predicted classes for the files without a class folder")
    loaded, o = load(args)
    settings = Settings(
        ascent=o,
        blocks=args.blocks,
        ig_steps=args.ig_steps,
        smoothgrad_samples=args.smoothgrad_samples,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    if generated:
        settings = _scaled(settings)
    spec = {
        "model": loaded.name,
        "weights": loaded.weights,
        "images": [os.fspath(i) for i in args.images],
        "limit": args.limit,
        "shuffle_seed": args.shuffle_seed,
        "methods": methods,
        "metrics": metrics,
        "mosaics": args.mosaics,
        "settings": _jsonable(settings),
    }
    result = run(
        loaded,
        items,
        methods=methods,
        metrics=metrics,
        settings=settings,
        out=args.out,
        spec=spec,
        mosaic_count=args.mosaics,
        workers=args.workers,
        progress=not args.no_progress,
    )
    if result is None:  # another rank writes the report
        return 0
    result.command = (
        "pullbacks " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if Path(sys.argv[0]).name in ("pullbacks", "__main__.py")
        else None
    )
    try:
        paths = result.save(args.out)
    except OSError as e:
        raise output_error(e, args.out) from None
    print(result.table())
    diff = result.differences_table()
    if diff:
        print()
        print(diff)
    print()
    for p in [Path(args.out) / RECORDS, *paths.values()]:
        print(p)
    return 0


def _jsonable(settings: Settings) -> dict:
    import dataclasses
    import json

    return json.loads(json.dumps(dataclasses.asdict(settings), default=str))
