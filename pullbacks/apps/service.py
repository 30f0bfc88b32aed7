"""The applications' shared layer: what the command line, the notebook's explorer and the
web app all do, done once.

* :func:`image_choices` / :func:`resolve_image`: example images by key
  (``"builtin:<name>"``, ``"imagenette:<class>"``), files, photos and tensors;
* :data:`MODELS`: loaded models, each loaded once (thread-safe);
* :func:`parse_target`: a class from ``"tabby"``, ``"281"``, ``281`` or ``"tabby (281)"``;
* :func:`comparing`: the ascent along the pullback and along the vanilla gradient with the
  same settings, step by step, then the top-5 before and after and the coverage of the pullback;
* :func:`format_top5`, :func:`coverage_note` and :func:`message`: the texts, with hints
  in the terms of the interface (``"cli"``, ``"app"`` or ``"python"``).

Every default comes from :class:`~pullbacks.core.options.AscentOptions`.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import sources
from ..classes import ClassNames
from ..core.ascent import ascent_steps
from ..core.coverage import Coverage
from ..core.errors import MissingExtraError, Problem
from ..core.options import FROM_RECIPE, AscentOptions, from_text
from ..core.policy import PartialPullbackError, PartialPullbackWarning
from ..figures.explain import top_k
from ..images import DataUnavailableError, ImageLoadError, Photo
from ..models import (
    LoadedModel,
    WeightsMismatchError,
    WeightsUnavailableError,
    get_model_spec,
    load_model,
    resolve_device,
)

DEFAULTS = AscentOptions()

# the problems a person can fix (a message, never a traceback)
EXPECTED_ERRORS = (
    WeightsUnavailableError,
    WeightsMismatchError,
    DataUnavailableError,
    ImageLoadError,
    FileNotFoundError,
    ValueError,
    TypeError,
    PartialPullbackError,
    MissingExtraError,
)

HINTS = {  # the fix of an error that carries none in an interface's terms, by interface
    "cli": {
        "DataUnavailableError": "on the command line: --imagenette-root FOLDER, --images builtin (offline "
        "photos) or --images FOLDER",
        "PartialPullbackError": "on the command line: drop --strict to get a warning instead",
    },
}
STRICT_HINT = {"cli": "--strict makes this an error", "app": "", "python": "strict=True makes this an error"}


def message(error: BaseException, interface: str = "python") -> str:
    """``error`` in one line for ``interface`` (``"python"``, ``"cli"``, ``"app"``), formatted from
    its fields (:class:`~pullbacks.core.errors.Problem`), never by rewriting its text."""
    if isinstance(error, PartialPullbackError):
        text = error.coverage.summary()
    elif isinstance(error, Problem):
        text = error.render(interface)
    elif interface != "python" and getattr(error, "elsewhere", None):
        text = error.elsewhere  # type: ignore[attr-defined]  # an ImageLoadError's other wording
    else:
        text = str(error)
    text = " ".join(text.split())
    hint = HINTS.get(interface, {}).get(type(error).__name__)
    if not hint:
        return text
    return f"{text} ({hint})" if interface == "cli" else f"{text} {hint}"


def from_boxes(values: dict | None, allowed: Sequence[str]) -> dict:
    """Option values from a front end's boxes, by field name (one of ``allowed``): text is read by
    ``options.from_text``, a checkbox's bool and a mapping are taken as they are, an empty box
    (``""``, None) is not given."""
    out = {}
    for name, value in (values or {}).items():
        if name not in allowed:
            raise ValueError(f"unknown option {name!r}; choose from {', '.join(allowed)}")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        out[name] = from_text(name, value) if isinstance(value, str) else value
    return out


def coverage_note(coverage: Coverage | None, interface: str = "python") -> str:
    """The partial-coverage warning in ``interface``'s terms ("" when the pullback is complete)."""
    if coverage is None or not coverage.ordinary:
        return ""
    hint = STRICT_HINT.get(interface, "")
    return coverage.summary() + (f"; {hint}" if hint else "")


# --------------------------------------------------------------------------- images


def image_choices(imagenette_root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``(label, key)`` pairs: the built-in photos, then the Imagenette rows if they are on
    disk (never downloads)."""
    choices = []
    for source, label in (("builtin", "built-in"), ("imagenette", "Imagenette")):
        try:
            choices += [
                (f"{item.name} ({label})", f"{source}:{item.name}")
                for item in sources.resolve_named(source, imagenette_root)
            ]
        except DataUnavailableError:
            pass
    return choices


def resolve_image(
    image: Any, imagenette_root: str | os.PathLike | None = None, n_classes: int = 1000
) -> tuple[Tensor, str, int | None]:
    """An image key (``"builtin:chelsea"``, a file path: :func:`pullbacks.sources.find`), a
    :class:`Photo` or a (3, H, W) tensor → (tensor in [-1, 1], name, label); ``label`` is the
    class of a built-in, Imagenette or generated image for a model of ``n_classes`` classes
    (None when the image's label belongs to another class list, and for files)."""
    if isinstance(image, sources.Item):
        return sources.load(image), image.name, image.label_for(n_classes)
    if isinstance(image, Photo):
        return image.image, image.name, image.label if n_classes == 1000 else None
    if isinstance(image, Tensor):
        if image.dim() != 3:
            raise ValueError(f"an image tensor must have shape (3, H, W), got {tuple(image.shape)}")
        return image, "image", None
    if image is None or (isinstance(image, str) and not image.strip()):
        raise ValueError("choose an example image or give an image file")
    item = sources.find(image, imagenette_root)
    return sources.load(item), item.name, item.label_for(n_classes)


# --------------------------------------------------------------------------- models


class Models:
    """Loaded models by (name, device, weights): each loaded once, never while another
    thread loads one; the only state the applications share between requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, str, str], LoadedModel] = {}

    def get(self, model: str | LoadedModel, device: str | None = None, weights: str = "default") -> LoadedModel:
        """``model`` (a name, or a :class:`LoadedModel` returned as it is), loaded once."""
        if isinstance(model, LoadedModel):
            return model
        key = (get_model_spec(model).name, str(resolve_device(device)), str(weights))
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load_model(key[0], weights=weights, device=key[1])
            return self._loaded[key]

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


MODELS = Models()


# --------------------------------------------------------------------------- targets and settings


def recommended(model: str, recipe: str = DEFAULTS.recipe) -> AscentOptions:
    """The options a front end starts from for ``model`` under ``recipe`` (the model's
    recommended settings, then the recipe's), without loading the model."""
    return AscentOptions(recipe=recipe, **get_model_spec(model).settings(recipe))


def class_choices(classes: Sequence[str]) -> list[str]:
    """``"tabby (281)"``: names to search, with their ImageNet index."""
    return [f"{name} ({i})" for i, name in enumerate(classes)]


def parse_target(text: Any, classes: ClassNames) -> int:
    """A class from ``"tabby"``, ``"281"``, ``281`` or ``"tabby (281)"``."""
    if text is None or (isinstance(text, str) and not text.strip()):
        raise ValueError("choose a target class: type part of its name (e.g. 'ostrich') or its ImageNet index")
    if isinstance(text, float) and text.is_integer():
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"a target class is a name or a whole ImageNet index, got {text!r}")
    if isinstance(text, str) and len(text) > MAX_TARGET_CHARS:
        raise ValueError(
            f"a target class is a name or an index of at most {MAX_TARGET_CHARS} characters, got {len(text)}"
        )
    name, index = _name_and_index(text) if isinstance(text, str) else (None, None)
    if index is None:
        return classes.index(text)
    i = classes.index(index)
    if name and name.casefold() != classes[i].casefold():
        raise ValueError(
            f"{text!r} names two classes: {name!r} and {i} ({classes[i]!r}); give the name or the index alone"
        )
    return i


MAX_TARGET_CHARS = 200  # ImageNet's longest class name has 30


def _name_and_index(text: str) -> tuple[str, int | None]:
    """``"tabby (281)"`` → ``("tabby", 281)``; anything else → ``(text, None)`` (linear time)."""
    stripped = text.strip()
    if not stripped.endswith(")"):
        return text, None
    head, sep, digits = stripped[:-1].rpartition("(")
    if not sep or not digits.isdigit() or not digits.isascii():
        return text, None
    return head.strip(), int(digits)


def optional(value: Any, name: str) -> float | None:
    """A setting where 0 or None means "none" (eps: no projection; a temperature: the model's own)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (0: none), got {value!r}") from None
    return None if number == 0 else number


def eps(value: Any) -> float | None:
    """The projection radius typed by a person: "recipe" (or FROM_RECIPE) for the recipe's,
    0 or None for no projection, else a number."""
    if value is FROM_RECIPE or (isinstance(value, str) and value.strip().lower() == "recipe"):
        return FROM_RECIPE
    return optional(value, "eps")


def whole(value: Any, name: str) -> int:
    """A count typed into a number box: a whole number."""
    if value is None:
        raise ValueError(f"{name} must be a whole number >= 1, got nothing")
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value}")
    return int(number)


# --------------------------------------------------------------------------- one explanation


@dataclass
class Comparison:
    """One image ascended towards one target along the pullback and the vanilla gradient."""

    clean: Tensor  # (3, H, W) in [-1, 1]
    pullback: Tensor
    vanilla: Tensor | None
    target: int
    target_name: str
    top5_before: list[tuple[str, float]]
    top5_pullback: list[tuple[str, float]]
    top5_vanilla: list[tuple[str, float]] | None
    coverage: Coverage | None  # None: the pullback was complete


@dataclass
class Progress:
    """Where :func:`comparing` is: ``method`` ("pullback" or "gradient"), ``step`` of ``steps``."""

    method: str
    step: int
    steps: int

    def __str__(self) -> str:
        kind = "pullback" if self.method == "pullback" else "vanilla gradient"
        return f"{kind} ascent: step {self.step} of {self.steps}"


STOP = threading.Event()  # set when the application shuts down: every ascent stops at its next step


class Stopped(Exception):
    """The application is shutting down (``STOP`` was set) and left an ascent unfinished."""


def comparing(
    loaded: LoadedModel, image: Tensor, target: int, options: AscentOptions, *, vanilla: bool = True
) -> Iterator[Progress | Comparison]:
    """:func:`compare` one step at a time: yields a :class:`Progress` after every step of
    each ascent, then the :class:`Comparison`. A caller that stops iterating (a web request
    cancelled, a client gone) stops the computation there; ``STOP`` stops every one."""
    x0 = image[None].to(loaded.device)
    ends: dict[str, Tensor] = {}
    coverage = None
    for method in ("pullback", "gradient") if vanilla else ("pullback",):
        o = options.replace(method=method)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PartialPullbackWarning)
            steps = ascent_steps(loaded.model, x0, target, o)
            for i, x in enumerate(steps, 1):
                ends[method] = x
                if STOP.is_set():
                    raise Stopped("the application is shutting down")
                yield Progress(method, i, o.steps)
        for w in caught:  # the coverage warning is returned; anything else goes on as usual
            if isinstance(w.message, PartialPullbackWarning):
                coverage = w.message.coverage
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    plain = ends.get("gradient")
    tops = top_k(
        loaded.model,
        torch.cat([x0, ends["pullback"]] + ([plain] if vanilla and plain is not None else [])),
        loaded.classes,
    )
    yield Comparison(
        x0[0].detach(),
        ends["pullback"][0].detach(),
        None if plain is None else plain[0].detach(),
        target,
        loaded.classes[target],
        tops[0],
        tops[1],
        tops[2] if vanilla else None,
        coverage,
    )


def format_top5(top: Sequence[tuple[str, float]], indent: str = "  ") -> str:
    """``  45.10%  tabby`` lines, the most probable first."""
    return "\n".join(f"{indent}{p:7.2%}  {name}" for name, p in top)
