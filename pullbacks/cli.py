"""Command line: ``pullbacks grid | explain | evaluate`` (also ``python -m pullbacks``).

Every wrong argument exits with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import torch

DEFAULT_MODEL = "efficientnet_lite0"


class UsageError(Exception):
    """A wrong argument found after parsing (unknown class, unreadable file, ...)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _eps(text: str) -> float | None:
    return None if text.lower() == "none" else positive_float(text)


def _add_common(p: argparse.ArgumentParser) -> None:
    from .models import available_models

    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"one of {', '.join(available_models())} (default: %(default)s, works offline)")
    p.add_argument("--weights", default="default",
                   help="'default' (pretrained), 'random', or a state_dict file (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=5, help="ascent steps (default: %(default)s)")
    p.add_argument("--alpha", type=positive_float, default=20.0, help="L2 length of a step (default: %(default)s)")
    p.add_argument("--eps", type=_eps, default=100.0, help="L2 radius of the projection, or 'none' (default: %(default)s)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="soft-gate temperature T (default: the model's recommended one)")
    p.add_argument("--pool-temperature", type=positive_float, default=None,
                   help="max-pool temperature (default: the model's recommended one)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pullbacks", description="Excitation pullbacks for ReLU networks (arXiv 2507.22832).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    grid = sub.add_parser("grid", help="render the class × target grid (pullback and vanilla gradient)",
                          description="Render the paper's class × target grid for the pullback and the vanilla gradient.")
    _add_common(grid)
    grid.add_argument("--images", nargs="+", default=["builtin"], metavar="IMAGES",
                      help="'builtin' (scikit-image photos, offline), 'imagenette' (the paper's rows), "
                           "or image files / a folder (rows labelled with the model's prediction)")
    grid.add_argument("--targets", nargs="+", default=None, metavar="CLASS",
                      help="target classes, ids or names (default: the rows' classes plus --extra random ones)")
    grid.add_argument("--extra", type=int, default=1, help="random extra target classes (default: %(default)s)")
    grid.add_argument("--seed", type=int, default=0, help="seed of the extra classes (default: %(default)s)")
    grid.add_argument("--batch-size", type=positive_int, default=16, help="(image, target) pairs per batch")
    grid.add_argument("--out", default="media", help="output folder (default: %(default)s)")
    grid.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    grid.set_defaults(run=run_grid)

    explain = sub.add_parser("explain", help="explain one image towards one target class",
                             description="Ascend one image towards a target; write clean | perturbed | difference.")
    explain.add_argument("image", help="an image file")
    explain.add_argument("--target", required=True, help="target class: id or name (e.g. 'tabby' or 281)")
    _add_common(explain)
    explain.add_argument("--method", choices=("pullback", "gradient"), default="pullback")
    explain.add_argument("--out", default=None, help="output image (default: <image stem>_<target>_explained.png)")
    explain.set_defaults(run=run_explain)

    try:
        from . import evaluate
    except ImportError:  # the optional evaluation extras are not installed
        evaluate = None
    if evaluate is not None and hasattr(evaluate, "add_arguments"):
        ev = sub.add_parser("evaluate", help="faithfulness metrics against gradient baselines",
                            description="Compare attribution methods with sanity checks and faithfulness metrics.")
        evaluate.add_arguments(ev)
        ev.set_defaults(run=evaluate.run)
    return parser


def _load(args):
    from .models import load_model

    weights = None if args.weights == "random" else args.weights
    loaded = load_model(args.model, weights=weights, device=args.device)
    temperature = args.temperature or loaded.temperature
    pool_temperature = args.pool_temperature or loaded.pool_temperature
    return loaded, temperature, pool_temperature


def _class_id(classes, text: str) -> int:
    try:
        return classes.index(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_grid(args) -> int:
    from .grid import render_grids
    from .images import builtin_photos, imagenette_rows, load_images
    from .explain import top_k

    loaded, temperature, pool_temperature = _load(args)
    if args.images == ["builtin"]:
        photos = builtin_photos()
    elif args.images == ["imagenette"]:
        photos = imagenette_rows()
    else:
        photos = None
        images, names = load_images(args.images[0] if len(args.images) == 1 else args.images)
    if photos is not None:
        images, labels, row_names = torch.stack([p.image for p in photos]), [p.label for p in photos], None
    else:  # unlabelled files: the row's class is the model's prediction
        labels = loaded.model(images.to(loaded.device)).argmax(1).tolist()
        row_names = [f"{n} ({loaded.classes[c]})" for n, c in zip(names, labels)]
    targets = None if args.targets is None else [_class_id(loaded.classes, t) for t in args.targets]
    if args.extra < 0:
        raise UsageError(f"--extra must be >= 0, got {args.extra}")
    render_grids(
        loaded.model, images.to(loaded.device), labels, loaded.classes, loaded.name,
        targets=targets, extra=args.extra, seed=args.seed, out=args.out, row_names=row_names,
        steps=args.steps, alpha=args.alpha, eps=args.eps, temperature=temperature,
        pool_temperature=pool_temperature, batch_size=args.batch_size, progress=not args.no_progress,
    )
    for folder in ("pullback_diff", "vanilla_grad_diff"):
        print(Path(args.out) / folder / f"{loaded.name}_alpha_{args.alpha:g}_steps_{args.steps}.jpg")
    return 0


def run_explain(args) -> int:
    from .explain import explain_image
    from .images import load_image

    image = load_image(args.image)
    loaded, temperature, pool_temperature = _load(args)
    target = _class_id(loaded.classes, args.target)
    result = explain_image(loaded.model, image.to(loaded.device), target, loaded.classes, method=args.method,
                           steps=args.steps, alpha=args.alpha, eps=args.eps, temperature=temperature,
                           pool_temperature=pool_temperature)
    for title, top in (("before", result.top5_before), (f"after {args.steps} step(s) towards {result.target_name}",
                                                        result.top5_after)):
        print(f"top-5 {title}:")
        for name, p in top:
            print(f"  {p:7.2%}  {name}")
    out = args.out or f"{Path(args.image).stem}_{target}_explained.png"
    print(result.save(out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .images import DataUnavailableError, ImageLoadError
    from .models import WeightsUnavailableError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ImageLoadError, FileNotFoundError, ValueError, TypeError,
            WeightsUnavailableError, DataUnavailableError) as e:
        message = " ".join(str(e).split())  # one line
        print(f"pullbacks {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
