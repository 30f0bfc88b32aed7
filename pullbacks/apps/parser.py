"""The command line's parser, built without importing torch: ``pullbacks --help``, every
sub-command's ``--help`` and every argument error are answered before torch loads (what the
parser needs of the package comes from :mod:`.facts`, written from the declarations). The
commands themselves run in :mod:`.cli`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import metadata

from ..core import validators
from .arguments import (
    _Parser,
    add_images,
    add_model,
    add_options,
    device,
    non_negative_int,
    port,
    positive_int,
)
from .facts import facts


def _names(what: str, allowed: list[str]) -> Callable[[str], str]:
    """An argparse type for ``--methods``/``--metrics`` items (commas also separate; 'all' is every one)."""

    def convert(text: str) -> str:
        for name in filter(None, (t.strip() for t in text.split(","))):
            if name != "all" and name not in allowed:
                raise argparse.ArgumentTypeError(validators.unknown_name(what, name, allowed))
        return text

    return convert


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:  # pragma: no cover - torch is a dependency
        return "not installed"


GRID_OMITS = ("method",)  # the grid renders both methods
TEXT_OMITS = ("steps", "alpha", "eps", "clip")  # no ascent for text: the gate options and the method


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="pullbacks",
        description="Excitation pullbacks: explain deep networks with backward-only soft gates (arXiv 2507.22832).",
    )
    parser.add_argument("--version", action="version", version=f"pullbacks {__version__} (torch {_torch_version()})")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    grid = sub.add_parser(
        "grid",
        help="render the class × target grid (pullback and vanilla gradient)",
        description="Render the paper's class × target grid for the pullback and the vanilla gradient.",
    )
    add_model(grid)
    add_options(grid, omit=GRID_OMITS)
    add_images(grid)
    grid.add_argument(
        "--targets",
        nargs="+",
        default=None,
        metavar="CLASS",
        help="target classes, ids or names (default: the rows' classes plus --extra random ones)",
    )
    grid.add_argument("--extra", type=int, default=1, help="random extra target classes (default: %(default)s)")
    grid.add_argument("--seed", type=int, default=0, help="seed of the extra classes (default: %(default)s)")
    grid.add_argument("--batch-size", type=positive_int, default=16, help="(image, target) pairs per batch")
    grid.add_argument("--out", default="out", help="output folder (default: %(default)s)")
    grid.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    grid.set_defaults(run="grid")

    explain = sub.add_parser(
        "explain",
        help="explain one image towards one target class",
        description="Ascend one image towards a target; write clean | perturbed | difference.",
    )
    explain.add_argument("image", help="an image file")
    explain.add_argument("--target", required=True, help="target class: id or name (e.g. 'tabby' or 281)")
    add_model(explain)
    add_options(explain)
    explain.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    explain.add_argument(
        "--out",
        default=None,
        help="output image, .png added if missing (default: <image name>_<ext>_<target>_explained.png)",
    )
    explain.set_defaults(run="explain")

    text = sub.add_parser(
        "explain-text",
        help="score each token of a text for a target (Hugging Face models)",
        description="Score each token of a text: the pullback with respect to its input embedding "
        "e_i, reduced to g_i · e_i (or ‖g_i‖). Needs pullbacks[text].",
    )
    text.add_argument("text", help="the text to explain")
    text.add_argument(
        "--model",
        required=True,
        metavar="hf/REPO",
        help="a sequence classifier or causal LM: hf/<repo id> (from the Hugging Face cache) or "
        "hf/<folder> saved with save_pretrained",
    )
    text.add_argument(
        "--target",
        default=None,
        help="a class id or label, or for a language model the next token "
        "(one token, e.g. ' Paris'); default: the model's top choice",
    )
    text.add_argument("--foil", default=None, help="explain target minus this class or token instead")
    text.add_argument(
        "--score",
        choices=("dot", "norm"),
        default="dot",
        help="per-token reduction: dot g·e (signed, default) or norm ‖g‖",
    )
    text.add_argument("--device", type=device, default=None, help="cpu (default), cuda, mps or auto")
    add_options(text, omit=TEXT_OMITS)
    text.add_argument("--html", default=None, metavar="FILE", help="also write the coloured tokens as HTML")
    text.add_argument(
        "--generate",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="a causal LM: continue the text by N greedy tokens and attribute each to every token before "
        "it (a heat map, written to --png)",
    )
    text.add_argument(
        "--png", default="generation.png", metavar="FILE", help="the heat map of --generate (default: %(default)s)"
    )
    text.set_defaults(run="explain_text")

    app = sub.add_parser(
        "app",
        help="the interactive explorer as a local web app (Gradio)",
        description="Serve the explorer in the browser: pullback and vanilla-gradient ascent side "
        "by side for your images (pip install -e '.[app]').",
    )
    app.add_argument(
        "--model",
        default=facts()["default_model"],
        help="the model selected at start (default: %(default)s, works offline); the page offers "
        "every registered model",
    )
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    app.add_argument("--port", type=port, default=7860, help="port (default: %(default)s)")
    app.add_argument("--device", type=device, default="auto", help="cpu, cuda, mps or auto (default: %(default)s)")
    app.add_argument(
        "--max-steps",
        type=non_negative_int,
        default=50,
        metavar="N",
        help="the most ascent steps one request may ask for, so that one request cannot hold the "
        "queue for long (0: no cap; default: %(default)s)",
    )
    app.add_argument(
        "--imagenette-root",
        default=None,
        metavar="FOLDER",
        help="where Imagenette is, for its example rows (never downloaded by the app)",
    )
    add_options(app, omit=tuple(n for n in facts()["fields"] if n != "rules"))  # --rules: Python objects, at start
    app.set_defaults(run="app")

    ev = sub.add_parser(
        "evaluate",
        help="faithfulness metrics against gradient baselines",
        description="Compare attribution methods with sanity checks and faithfulness metrics, over "
        "a dataset, resumably, on one process or many (torchrun).",
    )
    add_evaluate(ev)
    ev.set_defaults(run="evaluate")
    return parser


EVALUATE_OMITS = ("method",)  # every method is set per attribution method


def add_evaluate(parser: argparse.ArgumentParser) -> None:
    """The options of ``pullbacks evaluate``."""
    s = facts()["settings"]
    add_model(parser)
    add_images(parser, generated=True)
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="evaluate the first N images a shuffling DataLoader seeded --shuffle-seed draws, as the "
        "follow-up did (default: all)",
    )
    parser.add_argument(
        "--shuffle-seed", type=int, default=314, help="seed of that shuffle (default: %(default)s, the authors')"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        type=_names("method", facts()["methods"]),
        default=None,
        metavar="METHOD",
        help=f"any of {', '.join(facts()['methods'])} (default: {' '.join(facts()['default_methods'])}; "
        "'all': every one; commas also separate)",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        type=_names("metric", list(facts()["metrics"])),
        default=None,
        metavar="METRIC",
        help=f"any of {', '.join(facts()['metrics'])} (default: all but focus; commas also separate)",
    )
    parser.add_argument(
        "--mosaics",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="2x2 mosaics for the focus metric (the authors: 500; default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default="out/evaluation",
        help="output folder: records, evaluation.md, results.json, randomisation.png (default: "
        "%(default)s; the committed results were made with --out media/evaluation)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: %(default)s)")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=s["batch_size"],
        help="images per batch written to disk at once (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=non_negative_int, default=0, help="data-loading worker processes (default: %(default)s)"
    )
    add_options(parser, omit=EVALUATE_OMITS)
    parser.add_argument(
        "--blocks",
        type=positive_int,
        default=s["blocks"],
        help="layer blocks in the randomisation cascade (default: %(default)s)",
    )
    parser.add_argument(
        "--ig-steps", type=positive_int, default=s["ig_steps"], help="Integrated Gradients steps (default: %(default)s)"
    )
    parser.add_argument(
        "--smoothgrad-samples",
        type=positive_int,
        default=s["smoothgrad_samples"],
        help="SmoothGrad noise samples (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
