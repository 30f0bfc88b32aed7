"""The command line's argument types: each parses the text and hands it to the package's
own validator (``pullbacks.core.validators``), so a wrong value is a one-line message
naming the flag's problem, exit status 2."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from ..core import options, validators
from ..core.table import KEYWORDS, default_temperatures
from ..models import DEFAULT_MODEL, available_models


class UsageError(Exception):
    """A wrong argument found after parsing (unknown class, unreadable file, ...)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _argument(validator: Callable, parse: Callable = float, none: bool = False) -> Callable[[str], object]:
    """An argparse type that parses the text and hands it to the package's own validator."""
    def convert(text: str):
        if none and text.strip().lower() == "none":
            return None
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if parse is int else 'a number'}, "
                                             f"got {text!r}") from None
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
    raise argparse.ArgumentTypeError(f"device {text!r} ({kind}) is not available on this machine; "
                                     f"it has: {', '.join(available)}")


positive_int = _argument(validators.positive_integer, int)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (0: none)."""
    return 0 if text.strip() == "0" else positive_int(text)


def port(text: str) -> int:
    """``--port``: 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value
positive_float = _argument(validators.positive_number)
temperature = _argument(validators.temperature)
optional_positive = _argument(validators.positive_number, none=True)


def temperatures(text: str) -> dict:
    """``--temperatures gelu=0.5,attention=2``: per-family temperatures (validated like the keyword)."""
    pairs = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected FAMILY=VALUE pairs such as gelu=1.0,attention=1.5, got {item!r}")
        try:
            pairs[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number for {name.strip()!r}, got {value!r}") from None
    try:
        options.family_temperatures(pairs)
    except (TypeError, ValueError) as e:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in KEYWORDS.values())
        raise argparse.ArgumentTypeError(str(e).split(" (these have")[0] + f" (the ReLU family and max pooling "
                                         f"have flags of their own: {flags})") from None
    return pairs


def temperatures_help() -> str:
    """The defaults of ``--temperatures``, read from the rule table."""
    return ",".join(f"{k}={v:g}" for k, v in default_temperatures().items())

# --------------------------------------------------------------------------- groups of flags


def add_images(p: argparse.ArgumentParser, generated: bool = False) -> None:
    task = ", 'groundtruth:N' (N generated images whose deciding pixels are known)" if generated else ""
    p.add_argument("--images", nargs="+", default=["builtin"], metavar="IMAGES",
                   help=f"'builtin' (scikit-image photos, offline), 'imagenette' (the paper's rows){task}, "
                        "or image files / a folder (rows labelled with the model's prediction)")
    p.add_argument("--imagenette-root", default=None, metavar="FOLDER",
                   help="where Imagenette is (or is downloaded to) (default: ~/.cache/pullbacks/imagenette)")


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"one of {', '.join(available_models())}, any torchvision classification model, or "
                        "timm/<name> (default: %(default)s, works offline)")
    p.add_argument("--weights", default="default",
                   help="'default' (pretrained), 'random', or a state_dict file (default: %(default)s)")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, mps or auto (default: %(default)s)")


def variants(text: str) -> dict:
    """``--variants sdpa=held,mha=inputs``: rule variants (validated like the keyword)."""
    pairs = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected RULE=VARIANT pairs such as sdpa=held, got {item!r}")
        pairs[name.strip()] = value.strip()
    try:
        options.rule_variants(pairs)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return pairs


def rules(text: str) -> tuple:
    """``--rules mypackage.rules:ELU,...``: rules of your own, each ``MODULE:NAME`` of a rule or a
    list of rules, imported (the user's own code, as ``python -c`` would run it)."""
    import importlib

    found: list = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        module, sep, name = item.partition(":")
        if not sep or not module or not name:
            raise argparse.ArgumentTypeError(f"expected MODULE:NAME such as myrules:ELU, got {item!r}")
        try:
            value = getattr(importlib.import_module(module), name)
        except ImportError as e:
            raise argparse.ArgumentTypeError(f"cannot import {module!r} ({e}); is it on PYTHONPATH?") from None
        except AttributeError:
            raise argparse.ArgumentTypeError(f"{module!r} has no {name!r}") from None
        found += list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        return options.user_rules(found)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def clip(text: str):
    """``--clip -1,1`` or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        return validators.clip_range(text.split(","))
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e).replace("clip must be None or", "expected 'none' or")) from None


_KINDS: dict[str, dict] = {  # how each kind of option (options.FIELDS) reads on the command line
    "temperature": dict(type=temperature),
    "integer": dict(type=positive_int),
    "number": dict(type=positive_float),
    "optional_number": dict(type=optional_positive),
    "families": dict(type=temperatures, metavar="FAMILY=T,..."),
    "variants": dict(type=variants, metavar="RULE=VARIANT,..."),
    "rules": dict(type=rules, metavar="MODULE:NAME,..."),
    "clip": dict(type=clip, metavar="LOW,HIGH"),
    "flag": dict(action=argparse.BooleanOptionalAction),
}


def add_options(p: argparse.ArgumentParser, omit: tuple[str, ...] = ()) -> None:
    """A flag for every field of ``AscentOptions`` but ``omit`` (generated from ``options.FIELDS``).
    A flag not given leaves no attribute: the value then comes from the model's recommendation
    for the recipe, then the recipe, then ``AscentOptions``."""
    for name, field in options.FIELDS.items():
        if name in omit:
            continue
        kind = dict(choices=field.choices) if field.kind == "choice" else dict(_KINDS[field.kind])
        help_text = field.help
        if name == "temperatures":
            help_text += f"; families: {temperatures_help()}"
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS, help=help_text, **kind)


def load(args):
    """The model of ``--model/--weights/--device``, and the ascent options of the flags given."""
    from ..models import load_model

    loaded = load_model(args.model, weights=args.weights, device=args.device)
    return loaded, loaded.options(**given(args))


def given(args) -> dict:
    """The options whose flags were given (``add_options``), by field name."""
    return {name: getattr(args, name) for name in options.FIELDS if hasattr(args, name)}


def writable_folder(folder: str, flag: str) -> Path:
    """Create ``folder`` and check it can be written, before any computation."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".pullbacks-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write into {str(path)!r} ({e.strerror or e}); choose another folder with {flag}") from None
    return path
