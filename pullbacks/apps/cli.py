"""Command line: ``pullbacks grid | explain | explain-text | evaluate | app`` (also ``python -m pullbacks``).

The commands; their arguments are parsed by :mod:`.parser` (torch-free: the entry point parses
before this module, and torch, are imported), whose argument types (``arguments.py``) call the
package's validators; the work is done through the shared service layer.

Every wrong argument exits with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import parser
from .arguments import CREATED, UsageError, given, load, remove_empty, writable_folder
from .service import EXPECTED_ERRORS, coverage_note, format_top5, message, parse_target

GRID_OMITS, TEXT_OMITS = parser.GRID_OMITS, parser.TEXT_OMITS
build_parser = parser.build_parser


def _check_host(host: str, port: int) -> None:
    """``--host`` must be an address this machine can serve on (before anything starts)."""
    import socket

    try:
        socket.getaddrinfo(host, port)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        raise UsageError(
            f"cannot serve on {host}:{port} ({e.strerror or e}); pass another --host "
            "(127.0.0.1 for this machine alone, 0.0.0.0 for every interface) or --port"
        ) from None


def run_app(args: argparse.Namespace) -> int:
    """``pullbacks app``: build the page and serve it until Ctrl-C, which stops a running
    explanation at its next step and exits with status 130 within a few seconds."""
    import os
    import time

    from ..models import get_model_spec
    from . import service

    get_model_spec(args.model)  # an unknown --model fails before Gradio starts
    _check_host(args.host, args.port)
    try:
        from .web import build_app
    except ImportError as e:
        raise UsageError(f"{e} (then run pullbacks app again)") from None
    app = build_app(
        args.model,
        device=args.device,
        imagenette_root=args.imagenette_root,
        max_steps=args.max_steps or None,
        rules=getattr(args, "rules", ()),
    )
    try:
        app.launch(
            server_name=args.host,
            server_port=args.port,
            show_error=True,
            quiet=True,
            max_file_size="50mb",
            footer_links=[],
            prevent_thread_lock=True,
        )
    except OSError as e:
        raise UsageError(f"cannot serve on {args.host}:{args.port} ({e}); pass another --port or --host") from None
    print(f"pullbacks app: serving on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        service.STOP.set()  # a running ascent stops at its next step
        print("pullbacks app: stopped", file=sys.stderr, flush=True)
        time.sleep(0.5)
        # leave without the interpreter's teardown, which would wait on (or abort) threads torch and
        # the server still hold
        os._exit(130)
    return 0  # pragma: no cover - the loop only ends by Ctrl-C


def _photos(
    images: list[str], loaded: Any, imagenette_root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, list[int], list[str], bool]:
    """``--images`` (:func:`pullbacks.sources.resolve`): (images, labels, names, labelled); rows
    without a class get the model's prediction."""
    from ..sources import load, resolve

    items = resolve(images, imagenette_root)
    batch = torch.stack([load(item) for item in items])
    known = [item.label_for(len(loaded.classes)) for item in items]  # an ImageNet label means nothing to
    if all(label is not None for label in known):  # a model of other classes
        return batch, [int(label) for label in known if label is not None], [item.name for item in items], True
    with torch.no_grad():
        predicted = loaded.model(batch.to(loaded.device)).argmax(1).tolist()
    labels = [p if label is None else label for label, p in zip(known, predicted)]
    return batch, labels, [item.name for item in items], False


def _class_id(classes: Any, text: str) -> int:
    try:
        return parse_target(text, classes)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _explain_out(args: argparse.Namespace, target: int) -> Path:
    """``--out``: a file (``.png`` added if it has no suffix), or a folder (an existing one, or
    one written with a trailing slash) to put the default file name in."""
    image = Path(args.image)
    name = f"{image.stem}_{image.suffix.lstrip('.').lower() or 'image'}_{target}_explained.png"
    if args.out is None:
        return Path(name)
    out = Path(args.out)
    if out.is_dir() or args.out.endswith(("/", "\\")):
        return out / name
    out = out if out.suffix else out.with_suffix(".png")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise UsageError(
            f"--out {args.out!r}: the figure is written as an image; give a .png, .jpg, .pdf or .svg file (or a folder)"
        )
    if out.exists() and not os.access(out, os.W_OK):
        raise UsageError(f"--out {str(out)!r} exists and cannot be written; choose another file with --out")
    return out


def run_grid(args: argparse.Namespace) -> int:
    from ..figures.grid import render_grids
    from ..images import skipped_files

    if args.extra < 0:
        raise UsageError(f"--extra must be >= 0, got {args.extra}")
    writable_folder(args.out, "--out")
    if len(args.images) == 1:
        for f in skipped_files(args.images[0]):
            print(f"skipping {f.name}: not an image type pullbacks reads", file=sys.stderr)
    loaded, o = load(args)
    images, labels, names, labelled = _photos(args.images, loaded, args.imagenette_root)
    row_names = None if labelled else [f"{n} ({loaded.classes[c]})" for n, c in zip(names, labels)]
    targets = None if args.targets is None else [_class_id(loaded.classes, t) for t in args.targets]
    grids = render_grids(
        loaded.model,
        images.to(loaded.device),
        labels,
        loaded.classes,
        loaded.name,
        targets=targets,
        extra=args.extra,
        seed=args.seed,
        out=args.out,
        row_names=row_names,
        options=o,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    for grid in grids.values():
        print(grid.files["diff"])
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..figures.explain import explain_image
    from ..images import load_image

    image = load_image(args.image)
    loaded, o = load(args)
    target = _class_id(loaded.classes, args.target)
    out = _explain_out(args, target)
    writable_folder(str(out.parent), "--out")
    result = explain_image(
        loaded.model,
        image.to(loaded.device),
        target,
        loaded.classes,
        options=o,
        progress=o.steps > 1 and not args.no_progress,
    )
    for title, top in (
        ("before", result.top5_before),
        (f"after {o.steps} step(s) towards {result.target_name}", result.top5_after),
    ):
        print(f"top-5 {title}:")
        print(format_top5(top))
    print(result.save(out))
    return 0


def _explain_generation(args: argparse.Namespace, model: Any, tokenizer: Any, chosen: dict) -> int:
    """``explain-text --generate N``: the continuation, its heat map written to ``--png``."""
    from ..core.options import GateOptions
    from ..figures.grid import save_figure
    from ..text import explain_generation

    method = chosen.pop("method", "pullback")
    result = explain_generation(
        model,
        tokenizer,
        args.text,
        max_new_tokens=args.generate,
        score=args.score,
        method=method,
        options=GateOptions(**chosen) if method == "pullback" else None,
        progress=sys.stderr.isatty(),
    )
    print(f"continuation: {''.join(result.continuation)!r}")
    import matplotlib.pyplot as plt

    figure = result.figure()
    try:
        print(save_figure(figure, args.png, dpi=110))
    finally:
        plt.close(figure)
    return 0


def run_explain_text(args: argparse.Namespace) -> int:
    from ..core.options import GateOptions
    from ..models import load_text_model
    from ..text import explain_tokens

    if not args.model.startswith("hf/"):
        raise UsageError(f"--model {args.model!r}: text models are Hugging Face models, hf/<repo id> or hf/<folder>")
    if args.html is not None:
        writable_folder(str(Path(args.html).parent), "--html")
    if args.generate:
        writable_folder(str(Path(args.png).parent), "--png")
    model, tokenizer = load_text_model(args.model, device=args.device)
    chosen = given(args)
    if args.generate:
        return _explain_generation(args, model, tokenizer, chosen)
    method = chosen.pop("method", "pullback")
    scores = explain_tokens(
        model,
        tokenizer,
        args.text,
        args.target,
        foil=args.foil,
        score=args.score,
        method=method,
        options=GateOptions(**chosen) if method == "pullback" else None,
    )
    assert not isinstance(scores, list)  # one text, one TokenScores
    print(scores.terminal() if sys.stdout.isatty() else scores.label)
    print(scores.table())
    if args.html is not None:
        part = Path(args.html).with_name(f".{Path(args.html).name}.part")  # whole or not at all
        try:
            part.write_text(scores.html(), encoding="utf-8")
            os.replace(part, args.html)
        finally:
            part.unlink(missing_ok=True)
        print(args.html)
    return 0


def _one_line_warning(
    message_: Warning | str, category: type, filename: str, lineno: int, file: Any = None, line: str | None = None
) -> str:
    coverage = getattr(message_, "coverage", None)  # a PartialPullbackWarning: in the flag's terms
    text = coverage_note(coverage, "cli") if coverage is not None else " ".join(str(message_).split())
    return f"pullbacks: warning: {text}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the command ``args`` names (parsed by :func:`.parser.build_parser`)."""
    from .evaluation import run_evaluate

    command = {
        "grid": run_grid,
        "explain": run_explain,
        "explain_text": run_explain_text,
        "app": run_app,
        "evaluate": run_evaluate,
    }[args.run]
    saved = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]  # one line, no source line
    try:
        return command(args)
    except KeyboardInterrupt:
        remove_empty(CREATED)
        print(f"pullbacks {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, RuntimeError, *EXPECTED_ERRORS) as e:
        remove_empty(CREATED)
        print(f"pullbacks {args.command}: error: {message(e, 'cli')}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = saved
        CREATED.clear()


if __name__ == "__main__":
    sys.exit(main())
