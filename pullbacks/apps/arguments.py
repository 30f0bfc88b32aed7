"""The command line's argument types: each parses the text and hands it to the package's
own validator (``pullbacks.core.validators``), so a wrong value is a one-line message
naming the flag's problem, exit status 2."""

from __future__ import annotations

import argparse
from typing import Callable

import torch

from ..core import options, validators
from ..core.table import KEYWORDS, default_temperatures


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
