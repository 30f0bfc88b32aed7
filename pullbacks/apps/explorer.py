"""The notebook's interactive explorer: the local counterpart of the paper's online demo.

:func:`explore` is the plain callback (no widgets, tested without a browser): an image, a
model, a target class and the ascent's settings in; an
:class:`~pullbacks.figures.Explanation` out (clean | perturbed | difference, top-5 before
and after). :func:`explorer_widget` wraps it in ipywidgets controls.

Images are named by a key: ``"builtin:<name>"`` (the scikit-image photos),
``"imagenette:<class>"`` (the paper's rows, when on disk) or a file path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..figures.explain import Explanation, explain_image
from ..images import DataUnavailableError, ImageLoadError, Photo, builtin_photos, imagenette_rows, load_image
from ..models import (
    DEFAULT_MODEL,
    LoadedModel,
    WeightsUnavailableError,
    available_models,
    get_model_spec,
    load_model,
    resolve_device,
)

__all__ = ["explore", "explorer_widget", "image_options", "resolve_image", "clear_cache"]

_PHOTOS: dict[str, list[Photo]] = {}
_MODELS: dict[tuple, LoadedModel] = {}


def clear_cache() -> None:
    """Forget the photos and models loaded so far (they are kept between calls)."""
    _PHOTOS.clear()
    _MODELS.clear()


def _photos(source: str, imagenette_root=None) -> list[Photo]:
    key = f"{source}:{imagenette_root}"
    if key not in _PHOTOS:
        if source == "builtin":
            _PHOTOS[key] = builtin_photos()
        else:  # never downloads: the notebook's paper section does that
            _PHOTOS[key] = imagenette_rows(imagenette_root, download=False)
    return _PHOTOS[key]


def image_options(imagenette_root=None) -> list[tuple[str, str]]:
    """``(label, key)`` pairs for a dropdown: the built-in photos, then the Imagenette
    rows if they are on disk."""
    options = [(f"{p.name} (built-in)", f"builtin:{p.name}") for p in _photos("builtin")]
    try:
        options += [(f"{p.name} (Imagenette)", f"imagenette:{p.name}")
                    for p in _photos("imagenette", imagenette_root)]
    except DataUnavailableError:
        pass
    return options


def resolve_image(image: str | os.PathLike | Photo | Tensor, imagenette_root=None) -> tuple[Tensor, str, int | None]:
    """An image key, file path, :class:`Photo` or (3, H, W) tensor → (tensor, name, label).

    ``label`` is the ImageNet class of a built-in or Imagenette photo, else ``None``.
    """
    if isinstance(image, Photo):
        return image.image, image.name, image.label
    if isinstance(image, Tensor):
        if image.dim() != 3:
            raise ValueError(f"an image tensor must have shape (3, H, W), got {tuple(image.shape)}")
        return image, "image", None
    text = os.fspath(image)
    source, sep, name = text.partition(":")
    if sep and source in ("builtin", "imagenette"):
        photos = _photos(source, imagenette_root)
        for p in photos:
            if p.name.casefold() == name.strip().casefold():
                return p.image, p.name, p.label
        raise ValueError(f"no {source} image named {name!r}: choose one of "
                         + ", ".join(repr(p.name) for p in photos))
    path = Path(text).expanduser()
    return load_image(path), path.stem, None


def _model(model: str | LoadedModel, device, weights) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    dev = resolve_device(device)
    key = (get_model_spec(model).name, str(dev), str(weights))
    if key not in _MODELS:
        _MODELS[key] = load_model(model, weights=weights, device=dev)
    return _MODELS[key]


def _optional_positive(value, name: str) -> float | None:
    """``None`` or 0 → ``None``; a finite number > 0 → float."""
    if value is None:
        return None
    value = float(value)
    if value == 0:
        return None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number > 0 (or 0/None), got {value}")
    return value


def explore(
    image: str | os.PathLike | Photo | Tensor,
    model: str | LoadedModel = DEFAULT_MODEL,
    target: str | int | None = None,
    *,
    steps: int = 5,
    alpha: float = 20.0,
    eps: float | None = 100.0,
    temperature: float | None = None,
    pool_temperature: float | None = None,
    method: str = "pullback",
    device=None,
    weights="default",
    imagenette_root=None,
) -> Explanation:
    """The explorer's callback: ascend ``image`` towards ``target`` and describe it.

    ``image``: ``"builtin:<name>"``, ``"imagenette:<class>"``, a file path, a
    :class:`Photo` or a (3, H, W) tensor in [-1, 1]. ``model``: a registered name (loaded
    once, then cached) or a :class:`LoadedModel`. ``target``: a class name or id (``"tabby"``,
    ``281``, ``"281"``); empty or ``None`` means the image's own class, or the model's
    prediction for a file. ``eps`` and ``temperature``/``pool_temperature``: 0 or ``None``
    mean no projection and the model's recommended temperatures.
    Returns the :class:`~pullbacks.figures.Explanation` (``.figure``, ``.top5_before``,
    ``.top5_after``).
    """
    loaded = _model(model, device, weights)
    x, _name, label = resolve_image(image, imagenette_root)
    x = x.to(loaded.device)
    if target is None or (isinstance(target, str) and not target.strip()):
        if label is None:
            with torch.no_grad():
                label = int(loaded.model(x[None]).argmax(1))
        target_id = label
    else:
        target_id = loaded.classes.index(target)
    options = loaded.options(
        method=method, steps=int(steps), alpha=float(alpha), eps=_optional_positive(eps, "eps"),
        temperature=_optional_positive(temperature, "temperature"),
        pool_temperature=_optional_positive(pool_temperature, "pool_temperature"))
    return explain_image(loaded.model, x, target_id, loaded.classes, options)


def _top5_html(result: Explanation) -> str:
    def rows(top):
        return "".join(f"<tr><td style='text-align:right'>{p:.1%}</td><td>{n}</td></tr>" for n, p in top)

    return (
        "<div style='display:flex;gap:3em'>"
        f"<table><caption>top-5 before</caption>{rows(result.top5_before)}</table>"
        f"<table><caption>top-5 after → {result.target_name}</caption>{rows(result.top5_after)}</table>"
        "</div>"
    )


EXPECTED_ERRORS = (WeightsUnavailableError, DataUnavailableError, ImageLoadError, FileNotFoundError,
                   ValueError, TypeError)


def explorer_widget(
    models: Sequence[str] | None = None,
    *,
    device=None,
    image: str = "builtin:chelsea",
    model: str = DEFAULT_MODEL,
    target: str = "",
    steps: int = 5,
    alpha: float = 20.0,
    eps: float = 100.0,
    temperature: float | None = None,
    method: str = "pullback",
    weights="default",
    imagenette_root=None,
    width: int = 900,
    run: bool = False,
):
    """The explorer as ipywidgets controls; press *Explain* (or ``run=True``) to see
    clean | perturbed | difference with the top-5 classes before and after.

    The returned box has ``.controls`` (name → widget), ``.output`` and ``.run()``
    (what the button does), so it can be driven without a browser.
    """
    import ipywidgets as w
    from IPython.display import HTML, display

    from .notebook import show_image

    models = list(models) if models is not None else available_models()
    if model not in models:
        models.insert(0, model)

    def recommended(name: str) -> float:
        return get_model_spec(name).temperature

    c = dict(
        image=w.Dropdown(options=image_options(imagenette_root), value=image, description="image"),
        path=w.Text(value="", placeholder="or an image file path", description="file"),
        model=w.Dropdown(options=models, value=model, description="model"),
        target=w.Text(value=str(target), placeholder="name or id; empty: the image's class",
                      description="target"),
        method=w.ToggleButtons(options=["pullback", "gradient"], value=method, description="method"),
        steps=w.IntSlider(value=steps, min=1, max=20, description="steps"),
        alpha=w.FloatText(value=alpha, description="alpha"),
        eps=w.FloatText(value=eps, description="eps (0: none)"),
        temperature=w.FloatLogSlider(value=temperature or recommended(model), base=10, min=-2, max=1,
                                     step=0.05, description="T"),
    )
    button = w.Button(description="Explain", button_style="primary")
    output = w.Output()

    def on_model(change) -> None:
        c["temperature"].value = recommended(change["new"])

    c["model"].observe(on_model, names="value")

    def update(_=None) -> Explanation | None:
        output.clear_output(wait=True)
        with output:
            try:
                result = explore(
                    c["path"].value.strip() or c["image"].value, c["model"].value, c["target"].value,
                    steps=c["steps"].value, alpha=c["alpha"].value, eps=c["eps"].value,
                    temperature=c["temperature"].value, method=c["method"].value, device=device,
                    weights=weights, imagenette_root=imagenette_root,
                )
            except EXPECTED_ERRORS as e:
                print(f"{type(e).__name__}: {str(e).splitlines()[0]}")
                return None
            show_image(result.figure, width=width)
            display(HTML(_top5_html(result)))
        return result

    button.on_click(update)
    box = w.VBox([
        w.HBox([w.VBox([c["image"], c["path"], c["model"], c["target"]]),
                w.VBox([c["steps"], c["alpha"], c["eps"], c["temperature"]])]),
        w.HBox([c["method"], button]),
        output,
    ])
    box.controls, box.output, box.run = c, output, update
    if run:
        update()
    return box
