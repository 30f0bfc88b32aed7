"""The command line's argument types: each parses the text and hands it to the package's
own validator (``pullbacks.core.validators``), so a wrong value is a one-line message
naming the flag's problem, exit status 2. Nothing here imports torch at import time: what
the flags need to know of the package comes from :mod:`.facts`."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from ..core import validators
from ..core.errors import Problem
from .facts import facts


class UsageError(Exception):
    """A wrong argument found after parsing (unknown class, unreadable file, ...)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _argument(validator: Callable, parse: Callable = float, none: bool = False) -> Callable[[str], object]:
    """An argparse type that parses the text and hands it to the package's own validator."""

    def convert(text: str) -> object:
        if none and text.strip().lower() == "none":
            return None
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if parse is int else 'a number'}, got {text!r}"
            ) from None
        try:
            return validator(value, "value")
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e).replace("value ", "", 1)) from None

    return convert


def device(text: str) -> str:
    """``--device``: cpu, auto, or a CUDA/MPS device that this machine has."""
    name = text.strip().lower()
    if name in ("cpu", "auto"):
        return name
    if not re.fullmatch(r"(cuda|mps|xpu)(:\d+)?", name):  # torch-free: no such device anywhere
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N, mps or auto")
    import torch

    available = ["cpu", "auto"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        available.append("mps")
    if name in available:
        return name
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; this machine has: {', '.join(available)}") from None
    raise argparse.ArgumentTypeError(
        f"device {text!r} ({kind}) is not available on this machine; it has: {', '.join(available)}"
    )


positive_int = _argument(validators.positive_integer, int)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (0: none)."""
    return 0 if text.strip() == "0" else int(positive_int(text))  # type: ignore[call-overload]


def port(text: str) -> int:
    """``--port``: 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def temperatures_help() -> str:
    """The defaults of ``--temperatures``, read from the rule table."""
    return ",".join(f"{k}={v:g}" for k, v in facts()["temperatures"].items())


# --------------------------------------------------------------------------- groups of flags


def add_images(p: argparse.ArgumentParser, generated: bool = False) -> None:
    task = ", 'groundtruth:N' (N generated images whose deciding pixels are known)" if generated else ""
    p.add_argument(
        "--images",
        nargs="+",
        default=["builtin"],
        metavar="IMAGES",
        help=f"'builtin' (scikit-image photos, offline), 'imagenette' (the paper's rows){task}, "
        "or image files / a folder (rows labelled with the model's prediction)",
    )
    p.add_argument(
        "--imagenette-root",
        default=None,
        metavar="FOLDER",
        help="where Imagenette is (or is downloaded to) (default: ~/.cache/pullbacks/imagenette)",
    )


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=facts()["default_model"],
        help=f"one of {', '.join(facts()['models'])}, any torchvision classification model, or "
        "timm/<name> (default: %(default)s, works offline)",
    )
    p.add_argument(
        "--weights",
        default="default",
        help="'default' (pretrained), 'random', or a state_dict file (default: %(default)s)",
    )
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, mps or auto (default: %(default)s)")


def _option(name: str) -> Callable[[str], object]:
    """The argparse type of option ``name``: ``options.from_text``, its error in the flag's terms."""

    field = facts()["fields"][name]

    def convert(text: str) -> object:
        try:
            if field["kind"] in validators.PLAIN_KINDS:  # torch-free: the validators alone
                return validators.plain_from_text(name, field["kind"], text, tuple(field["choices"]))
            from ..core import options  # families, variants, rules: the rule table

            return options.from_text(name, text)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(
                e.render("cli", option=False) if isinstance(e, Problem) else str(e)
            ) from None

    return convert


_METAVARS = {"families": "FAMILY=T,...", "variants": "RULE=VARIANT,...", "rules": "MODULE:NAME,...", "clip": "LOW,HIGH"}


def add_options(p: argparse.ArgumentParser, omit: tuple[str, ...] = ()) -> None:
    """A flag for every field of ``AscentOptions`` but ``omit`` (generated from ``options.FIELDS``).
    A flag not given leaves no attribute: the value then comes from the model's recommendation
    for the recipe, then the recipe, then ``AscentOptions``."""
    for name, field in facts()["fields"].items():
        if name in omit:
            continue
        kind: dict[str, Any]
        if field["kind"] == "flag":
            kind = dict(action=argparse.BooleanOptionalAction)
        elif field["kind"] == "choice":
            kind = dict(choices=tuple(field["choices"]))
        else:
            kind = dict(type=_option(name), metavar=_METAVARS.get(field["kind"]))
        help_text = field["help"]
        if name == "temperatures":
            help_text += f"; families: {temperatures_help()}"
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS, help=help_text, **kind)


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model of ``--model/--weights/--device``, and the ascent options of the flags given."""
    from ..models import load_model

    loaded = load_model(args.model, weights=args.weights, device=args.device)
    return loaded, loaded.options(**given(args))


def given(args: argparse.Namespace) -> dict:
    """The options whose flags were given (``add_options``), by field name."""
    return {name: getattr(args, name) for name in facts()["fields"] if hasattr(args, name)}


CREATED: list[Path] = []  # the folders this command created (``remove_empty``: none is left empty)


def remove_empty(folders: list[Path]) -> None:
    """Remove what ``folders`` (created by this command) hold of empty folders, and each of
    them if it is then empty: a run stopped before it wrote anything leaves nothing behind,
    and what it finished stays."""
    for top in reversed(folders):
        if not top.is_dir():
            continue
        for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(sub.iterdir()):
                sub.rmdir()
        if not any(top.iterdir()):
            top.rmdir()
    folders.clear()


def writable_folder(folder: str, flag: str) -> Path:
    """Create ``folder`` and check it can be written, before any computation."""
    path = Path(folder)
    missing = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    if missing is not None:
        CREATED.append(missing)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".pullbacks-write-test-{os.getpid()}"  # one per process: torchrun ranks check at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(
            f"cannot write into {str(path)!r} ({e.strerror or e}); choose another folder with {flag}"
        ) from None
    return path
