"""The notebook's interactive explorer: the local counterpart of the paper's online demo.

:func:`explore` is the plain callback (no widgets, tested without a browser): an image, a
model, a target class and the ascent's settings in; an
:class:`~pullbacks.figures.Explanation` out (clean | perturbed | difference, top-5 before
and after). :func:`explorer_widget` wraps it in ipywidgets controls.

Images are named by a key: ``"builtin:<name>"`` (the scikit-image photos),
``"imagenette:<class>"`` (the paper's rows, when on disk) or a file path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.options import FIELDS
from ..core.recipes import RECIPES
from ..figures.explain import Explanation, explain_image
from ..images import Photo
from ..models import DEFAULT_MODEL, LoadedModel, available_models
from . import service
from .service import DEFAULTS, EXPECTED_ERRORS, resolve_image
from .service import image_choices as image_options

__all__ = ["explore", "explorer_widget", "image_options", "resolve_image", "clear_cache"]


SHOWN = ("recipe", "steps", "alpha", "eps", "temperature", "method")  # laid out by hand
MORE = tuple(k for k in FIELDS if k not in SHOWN + ("rules",))  # generated; rules: explorer_widget(rules=...)


def clear_cache() -> None:
    """Forget the models loaded so far (they are kept between calls)."""
    service.MODELS.clear()


def explore(
    image: str | os.PathLike | Photo | Tensor,
    model: str | LoadedModel = DEFAULT_MODEL,
    target: str | int | None = None,
    *,
    recipe: str = DEFAULTS.recipe,
    steps: int | None = DEFAULTS.steps,
    alpha: float | None = DEFAULTS.alpha,
    eps: float | str | None = "recipe",
    temperature: float | None = None,
    pool_temperature: float | None = None,
    method: str = DEFAULTS.method,
    device: str | None = None,
    weights: str = "default",
    imagenette_root: str | os.PathLike | None = None,
    more: dict | None = None,
    rules: tuple = (),
) -> Explanation:
    """The explorer's callback: ascend ``image`` towards ``target`` and describe it.

    ``image``: ``"builtin:<name>"``, ``"imagenette:<class>"``, a file path, a
    :class:`Photo` or a (3, H, W) tensor in [-1, 1]. ``model``: a registered name (loaded
    once, then cached) or a :class:`LoadedModel`. ``target``: a class name or id (``"tabby"``,
    ``281``, ``"281"``); empty or ``None`` means the image's own class, or the model's
    prediction for a file. ``recipe``: "excitation" or "semantic". ``eps``: "recipe" for the
    recipe's, 0 or ``None`` for no projection. ``temperature``/``pool_temperature``, and
    ``steps``/``alpha``: 0 or ``None`` mean the model's recommended values for the recipe.
    ``more``: any other option by name, as a value or as text (:func:`~pullbacks.apps.service.from_boxes`;
    ``{"gate": "normal_cdf", "temperatures": "gelu=0.5"}``); ``rules``: rules of your own. Returns the
    :class:`~pullbacks.figures.Explanation` (``.figure``, ``.top5_before``,
    ``.top5_after``).
    """
    loaded = service.MODELS.get(model, device, weights)
    x, _name, label = resolve_image(image, imagenette_root, len(loaded.classes))
    x = x.to(loaded.device)
    if target is None or (isinstance(target, str) and not target.strip()):
        if label is None:
            with torch.no_grad():
                label = int(loaded.model(x[None]).argmax(1))
        target_id = label
    else:
        target_id = service.parse_target(target, loaded.classes)
    given = dict(
        recipe=recipe,
        method=method,
        steps=None if not steps else service.whole(steps, "steps"),
        alpha=service.optional(alpha, "alpha"),
        eps=service.eps(eps),
        temperature=service.optional(temperature, "temperature"),
        pool_temperature=service.optional(pool_temperature, "pool_temperature"),
        **({"rules": tuple(rules)} if rules else {}),
    )
    given.update(service.from_boxes(more, MORE))
    options = loaded.options(**given)  # type: ignore[arg-type]  # option keywords, validated by AscentOptions
    return explain_image(loaded.model, x, target_id, loaded.classes, options=options)


def _top5_html(result: Explanation) -> str:  # the notebook's form of service.format_top5
    def rows(top: Sequence[tuple[str, float]]) -> str:
        return "".join(f"<tr><td style='text-align:right'>{p:.1%}</td><td>{n}</td></tr>" for n, p in top)

    return (
        "<div style='display:flex;gap:3em'>"
        f"<table><caption>top-5 before</caption>{rows(result.top5_before)}</table>"
        f"<table><caption>top-5 after → {result.target_name}</caption>{rows(result.top5_after)}</table>"
        "</div>"
    )


def explorer_widget(
    models: Sequence[str] | None = None,
    *,
    device: str | None = None,
    image: str = "builtin:chelsea",
    model: str = DEFAULT_MODEL,
    target: str = "",
    recipe: str = DEFAULTS.recipe,
    steps: int | None = None,
    alpha: float | None = None,
    eps: float | str | None = "recipe",
    temperature: float | None = None,
    method: str = DEFAULTS.method,
    weights: str = "default",
    imagenette_root: str | os.PathLike | None = None,
    width: int = 900,
    run: bool = False,
    rules: tuple = (),
) -> Any:
    """The explorer as ipywidgets controls; press *Explain* (or ``run=True``) to see
    clean | perturbed | difference with the top-5 classes before and after.

    The returned box has ``.controls`` (name → widget), ``.output`` and ``.run()``
    (what the button does), so it can be driven without a browser. Every option not laid out
    is a box under "more options" (generated from ``options.FIELDS``); ``rules``: rules of
    your own.
    """
    import ipywidgets as w
    from IPython.display import HTML, display

    from .notebook import show_image

    models = list(models) if models is not None else available_models()
    if model not in models:
        models.insert(0, model)

    start = service.recommended(model, recipe)
    eps = service.eps(eps)
    c = dict(
        image=w.Dropdown(options=image_options(imagenette_root), value=image, description="image"),
        path=w.Text(value="", placeholder="or an image file path", description="file"),
        model=w.Dropdown(options=models, value=model, description="model"),
        target=w.Text(value=str(target), placeholder="name or id; empty: the image's class", description="target"),
        method=w.ToggleButtons(options=["pullback", "gradient"], value=method, description="method"),
        recipe=w.Dropdown(options=list(RECIPES), value=recipe, description="recipe"),
        steps=w.IntSlider(value=steps or start.steps, min=1, max=20, description="steps"),
        alpha=w.FloatText(value=alpha or start.alpha, description="alpha"),
        eps=w.FloatText(
            value=(start.eps or 0.0) if eps is service.FROM_RECIPE else (eps or 0.0), description="eps (0: none)"
        ),
        temperature=w.FloatLogSlider(
            value=temperature or start.temperature, base=10, min=-2, max=1, step=0.05, description="T"
        ),
    )
    for name in MORE:  # generated from the declaration: empty means the recipe's or the model's
        field = FIELDS[name]
        if field.kind == "flag":
            c[name] = w.Checkbox(value=getattr(DEFAULTS, name), description=name)
        elif field.kind == "choice":
            c[name] = w.Dropdown(options=["", *field.choices], value="", description=name)
        else:
            c[name] = w.Text(value="", placeholder=field.help[:60], description=name)
        c[name].tooltip = field.help
    button = w.Button(description="Explain", button_style="primary")
    output = w.Output()

    def on_change(_: object) -> None:  # a model or recipe chosen: its recommended settings
        o = service.recommended(c["model"].value, c["recipe"].value)
        c["temperature"].value, c["steps"].value, c["alpha"].value, c["eps"].value = (
            o.temperature,
            o.steps,
            o.alpha,
            o.eps or 0.0,
        )

    c["model"].observe(on_change, names="value")
    c["recipe"].observe(on_change, names="value")

    def update(_: object = None) -> Explanation | None:
        output.clear_output(wait=True)
        with output:
            try:
                result = explore(
                    c["path"].value.strip() or c["image"].value,
                    c["model"].value,
                    c["target"].value,
                    recipe=c["recipe"].value,
                    steps=c["steps"].value,
                    alpha=c["alpha"].value,
                    eps=c["eps"].value,
                    temperature=c["temperature"].value,
                    method=c["method"].value,
                    device=device,
                    weights=weights,
                    imagenette_root=imagenette_root,
                    rules=rules,
                    more={name: c[name].value for name in MORE},
                )
            except EXPECTED_ERRORS as e:
                print(f"{type(e).__name__}: {service.message(e)}")
                return None
            show_image(result.figure, width=width)
            display(HTML(_top5_html(result)))
        return result

    button.on_click(update)
    box = w.VBox(
        [
            w.HBox(
                [
                    w.VBox([c["image"], c["path"], c["model"], c["target"]]),
                    w.VBox([c["steps"], c["alpha"], c["eps"], c["temperature"]]),
                ]
            ),
            w.HBox([c["method"], c["recipe"], button]),
            w.Accordion(children=[w.VBox([c[name] for name in MORE])], titles=("more options",)),
            output,
        ]
    )
    box.controls, box.output, box.run = c, output, update
    if run:
        update()
    return box
