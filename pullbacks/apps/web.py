"""``pullbacks app``: the paper's online explorer as a local Gradio app that works offline.

Pick an image (upload, a built-in photo, or an Imagenette row when it is on disk), a model
and a target class (by name, with search, or by ImageNet index), set the ascent, press
"Explain!". The page shows the excitation-pullback ascent and the vanilla-gradient ascent
side by side, each as two before/after sliders (perturbed vs difference, perturbed vs
source), the top-5 classes before and after, and a PNG of everything to download.

:func:`explain` is the plain callback (tested through Gradio's client and a browser);
:func:`build_app` lays out the page. Every expected problem (a corrupt upload, an unknown
class, steps 0, weights that cannot be downloaded) becomes a message in the page, and the
app keeps serving. Loaded models are the only state shared between requests: a read-only
cache, filled under a lock.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from ..core.options import FIELDS
from ..core.recipes import RECIPES
from ..core.table import default_temperatures
from ..figures.cells import rescale_cells
from ..models import DEFAULT_MODEL, OFFLINE_MODEL, available_models, get_model_spec
from . import service
from .service import DEFAULTS, EXPECTED_ERRORS, class_choices, image_choices

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # a local tool: no telemetry, no version check, nothing sent
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:
    import gradio as gr
except ImportError as e:  # the optional extra
    raise ImportError('the web app needs Gradio: pip install -e ".[app]" (or pip install gradio)') from e

__all__ = ["build_app", "explain", "Result", "image_choices", "class_choices"]

FAMILY_TEMPERATURES = default_temperatures()  # the temperature boxes, from the rule table
# every option of AscentOptions (options.FIELDS) is on the page: these laid out by hand, ...
SHOWN = ("recipe", "steps", "alpha", "eps", "temperature", "temperatures")
SERVER = ("rules",)  # ... these given when the app starts (pullbacks app --rules MODULE:NAME: Python objects),
APP_OMITS = ("method",)  # ... this one shown both ways side by side,
MORE = tuple(k for k in FIELDS if k not in SHOWN + SERVER + APP_OMITS)  # ... the rest generated under "more options"


# --------------------------------------------------------------------------- the callback


@dataclass
class Result:
    """One explanation: uint8 HxWx3 pictures, top-5 tables, the coverage note, the PNG."""

    source: np.ndarray
    pullback: np.ndarray
    pullback_diff: np.ndarray
    vanilla: np.ndarray
    vanilla_diff: np.ndarray
    top5_before: dict[str, float]
    top5_pullback: dict[str, float]
    top5_vanilla: dict[str, float]
    note: str
    png: Path


def _picture(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] → HxWx3 uint8."""
    return ((x.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _diff(perturbed: torch.Tensor, clean: torch.Tensor) -> np.ndarray:
    return _picture(rescale_cells((perturbed - clean)[None])[0] * 2 - 1)


CACHE_SECONDS = (300, 600)  # Gradio's copies of the results: every 5 minutes, those older than 10 are deleted


def _without_server_paths(text: str, upload: Any) -> str:
    """``text`` with the server's temporary path of an upload replaced by the file's name."""
    if upload:
        path = os.fspath(upload)
        text = text.replace(repr(path), repr(Path(path).name)).replace(path, Path(path).name)
    return text.replace(tempfile.gettempdir(), "…")


def _validate_quietly(component: Any) -> None:
    """Gradio's own check of an input (a value not among a dropdown's choices, text in a number
    box) answers with a message in the page and prints no traceback on the server."""
    check = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return check(payload)
        except Exception as e:
            label = component.label or "an input"
            problem = f"a number, got {payload!r}" if isinstance(component, gr.Number) else " ".join(str(e).split())
            raise gr.Error(f"{label}: {problem}", print_exception=False) from None

    component.preprocess = preprocess


MAX_STEPS = 50  # per request, by default: about 20 s of a CPU for the embedded model (pullback and vanilla)


def explaining(
    upload: str | None,
    example: str | None,
    model: str,
    target: Any,
    steps: Any = DEFAULTS.steps,
    alpha: Any = DEFAULTS.alpha,
    eps: Any = DEFAULTS.eps,
    temperature: Any = None,
    family_temperatures: dict | None = None,
    recipe: str = DEFAULTS.recipe,
    *,
    device: str = "cpu",
    imagenette_root: str | os.PathLike | None = None,
    out_dir: str | Path | None = None,
    max_steps: int | None = MAX_STEPS,
    more: dict | None = None,
    rules: tuple = (),
) -> Iterator[str | Result]:
    """:func:`explain` one step at a time: yields a progress line after every ascent step,
    then the :class:`Result`. Whoever stops iterating (a cancelled request, a client gone)
    stops the computation there. ``more``: the "more options" boxes by name
    (:func:`~pullbacks.apps.service.from_boxes`); ``rules``: rules of your own (given when the
    app starts)."""
    loaded = service.MODELS.get(model, device)
    x, name, _ = service.resolve_image(upload or example, imagenette_root)
    t = service.parse_target(target, loaded.classes)
    n = service.whole(steps, "steps")
    if max_steps is not None and n > max_steps:
        raise ValueError(
            f"steps must be at most {max_steps} in this app, got {n} (start it with "
            "pullbacks app --max-steps N for more)"
        )
    o = loaded.options(
        recipe=recipe,
        steps=n,
        alpha=alpha,
        eps=service.optional(eps, "eps"),
        temperature=temperature,
        temperatures=family_temperatures or None,
        **cast(dict[str, Any], {"rules": tuple(rules)} if rules else {}),
        **service.from_boxes(more, MORE),
    )
    for item in service.comparing(loaded, x, t, o):
        if not isinstance(item, service.Comparison):
            yield str(item)
            continue
        c = item
        note = service.coverage_note(c.coverage, "app")
        assert c.vanilla is not None and c.top5_vanilla is not None  # the app always asks for the vanilla column
        result = Result(
            _picture(c.clean),
            _picture(c.pullback),
            _diff(c.pullback, c.clean),
            _picture(c.vanilla),
            _diff(c.vanilla, c.clean),
            dict(c.top5_before),
            dict(c.top5_pullback),
            dict(c.top5_vanilla),
            f"Warning: {note}" if note else "",
            Path(),
        )
        result.png = _save(result, name, c.target_name, out_dir)
        yield result


def explain(*args: Any, progress: bool = False, **kwargs: Any) -> Result:
    """Ascend the image towards ``target`` along the excitation pullback and the vanilla
    gradient with the same settings, under ``recipe`` (arguments as :func:`explaining`).
    ``temperature`` None: the model's recommended one; ``eps`` 0: no projection. Raises the
    package's own errors for bad input (the page shows them)."""
    for item in explaining(*args, **kwargs):
        if isinstance(item, Result):
            return item
        if progress:
            print(item, flush=True)
    raise AssertionError("explaining() ended without its result")  # pragma: no cover


def _save(r: Result, name: str, target_name: str, out_dir: str | Path | None) -> Path:
    """source | pullback | pullback diff | vanilla | vanilla diff, side by side, as one PNG."""
    row = np.concatenate([r.source, r.pullback, r.pullback_diff, r.vanilla, r.vanilla_diff], axis=1)
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="pullbacks-"))
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{name}_to_{target_name}").strip("_")
    path = folder / f"{safe}.png"
    Image.fromarray(row).save(path)
    return path


# --------------------------------------------------------------------------- the page


def _more_box(name: str) -> gr.components.Component:
    """The input of one option of ``MORE``, from its declaration (``options.FIELDS``)."""
    field = FIELDS[name]
    if field.kind == "flag":
        return gr.Checkbox(getattr(DEFAULTS, name), label=name, info=field.help)
    if field.kind == "choice":
        return gr.Dropdown(["", *field.choices], value="", label=name, info=field.help)
    return gr.Textbox("", label=name, info=field.help)


def build_app(
    model: str = DEFAULT_MODEL,
    device: str = "cpu",
    imagenette_root: str | os.PathLike | None = None,
    models: Sequence[str] | None = None,
    max_steps: int | None = MAX_STEPS,
    rules: tuple = (),
) -> gr.Blocks:
    """The page. ``model`` is selected at start (loaded on the first request); ``models``
    the dropdown's choices (default: every registered model); ``max_steps`` the most steps
    one request may ask for (None: no cap), so that one request cannot hold the queue;
    ``rules``: rules of your own, applied to every request."""
    models = list(models or available_models())
    if get_model_spec(model).name not in models:
        models.insert(0, get_model_spec(model).name)
    start = get_model_spec(model)
    classes = start.classes()
    images = image_choices(imagenette_root)
    first = service.recommended(start.name, DEFAULTS.recipe)

    def run(
        upload: Any,
        example: Any,
        model_name: str,
        target: Any,
        recipe: str,
        steps: Any,
        alpha: Any,
        eps: Any,
        temperature: Any,
        *rest: Any,
    ) -> Any:
        # a generator: Gradio closes it when the request is cancelled or its client goes away,
        # and the ascent stops at its next step
        folder = Path(tempfile.mkdtemp(prefix="pullbacks-"))  # this request's PNG; removed once delivered
        try:
            temps = dict(zip(FAMILY_TEMPERATURES, rest))
            more = dict(zip(MORE, rest[len(FAMILY_TEMPERATURES) :]))
            for r in explaining(
                upload,
                example,
                model_name,
                target,
                steps,
                alpha,
                eps,
                temperature,
                temps,
                recipe,
                device=device,
                imagenette_root=imagenette_root,
                max_steps=max_steps,
                out_dir=folder,
                more=more,
                rules=rules,
            ):
                if not isinstance(r, Result):
                    yield (gr.skip(),) * 7 + (f"*{r}*", gr.skip())
                    continue
                yield (
                    (r.pullback, r.pullback_diff),
                    (r.pullback, r.source),
                    (r.vanilla, r.vanilla_diff),
                    (r.vanilla, r.source),
                    r.top5_before,
                    r.top5_pullback,
                    r.top5_vanilla,
                    r.note,
                    str(r.png),
                )
        except EXPECTED_ERRORS as e:
            raise gr.Error(_without_server_paths(service.message(e, "app"), upload), print_exception=False) from None
        except service.Stopped:
            raise gr.Error("the app is shutting down", print_exception=False) from None
        finally:  # Gradio has copied the PNG into its own cache (bounded by delete_cache) by now
            shutil.rmtree(folder, ignore_errors=True)

    def settings_changed(name: str, recipe: str) -> Any:
        """A model or recipe chosen: its recommended settings in the boxes."""
        try:
            o = service.recommended(name, recipe)
        except ValueError as e:
            raise gr.Error(service.message(e, "app"), print_exception=False) from None
        return (o.temperature, o.steps, o.alpha, o.eps or 0, *(o.temperature_of(k) for k in FAMILY_TEMPERATURES))

    with gr.Blocks(title="pullbacks: excitation pullbacks", analytics_enabled=False, delete_cache=CACHE_SECONDS) as app:
        gr.Markdown(
            "## Excitation pullbacks\n"
            "Ascend an image towards a target class along the **excitation pullback** (forward pass unchanged, "
            "soft gates in the backward pass) and, for contrast, along the **vanilla gradient** with the same "
            "settings. Each slider shows the perturbed image against the difference (rescaled) or the source."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="your image (or pick an example below)",
                    file_types=["image"],
                    type="filepath",
                    height=120,
                    elem_id="upload",
                )
                example = gr.Dropdown(images, value=images[0][1], label="example image")
                model_box = gr.Dropdown(
                    models,
                    value=start.name,
                    label="model",
                    info=f"{OFFLINE_MODEL} works offline; the others download their weights on first use",
                )
                target = gr.Dropdown(
                    class_choices(classes),
                    value=None,
                    label="target class",
                    info="type part of a name, or an ImageNet index (0-999)",
                    allow_custom_value=True,
                    filterable=True,
                    elem_id="target",
                )
                recipe = gr.Radio(
                    list(RECIPES),
                    value=DEFAULTS.recipe,
                    label="recipe",
                    elem_id="recipe",
                    info="excitation: the seed paper; semantic: the authors' follow-up code",
                )
                with gr.Row():
                    steps = gr.Number(
                        first.steps, label="steps" + (f" (at most {max_steps})" if max_steps else ""), precision=0
                    )
                    alpha = gr.Number(first.alpha, label="alpha (step length)")
                with gr.Row():
                    eps = gr.Number(first.eps or 0, label="eps (projection radius, 0: none)")
                    temperature = gr.Number(first.temperature, label="temperature (ReLU family)")
                with gr.Accordion("temperatures beyond ReLU (used where the model has these operators)", open=False):
                    family = [gr.Number(first.temperature_of(k), label=k) for k in FAMILY_TEMPERATURES]
                with gr.Accordion("more options (empty: the recipe's or the model's)", open=False):
                    extra = [_more_box(name) for name in MORE]
                    if rules:
                        gr.Markdown("rules of your own: " + ", ".join(r.family for r in rules))
                button = gr.Button("Explain!", variant="primary", elem_id="explain")
            with gr.Column(scale=2):
                note = gr.Markdown("", elem_id="note")
                with gr.Row():
                    gr.Markdown("### excitation pullback")
                    gr.Markdown("### vanilla gradient")
                with gr.Row():
                    p_diff = gr.ImageSlider(label="pullback: perturbed | difference", elem_id="pullback-diff")
                    v_diff = gr.ImageSlider(label="vanilla: perturbed | difference", elem_id="vanilla-diff")
                with gr.Row():
                    p_src = gr.ImageSlider(label="pullback: perturbed | source", elem_id="pullback-source")
                    v_src = gr.ImageSlider(label="vanilla: perturbed | source", elem_id="vanilla-source")
                with gr.Row():
                    top_before = gr.Label(num_top_classes=5, label="top-5 before")
                    top_pullback = gr.Label(num_top_classes=5, label="top-5 after (pullback)")
                    top_vanilla = gr.Label(num_top_classes=5, label="top-5 after (vanilla)")
                download = gr.File(label="download: source | pullback | difference | vanilla | difference")
        for box in (upload, example, model_box, target, recipe, steps, alpha, eps, temperature, *family, *extra):
            _validate_quietly(box)
        for box in (model_box, recipe):
            box.change(settings_changed, [model_box, recipe], [temperature, steps, alpha, eps, *family])
        button.click(
            run,
            [upload, example, model_box, target, recipe, steps, alpha, eps, temperature, *family, *extra],
            [p_diff, p_src, v_diff, v_src, top_before, top_pullback, top_vanilla, note, download],
            api_name="explain",
            concurrency_limit=1,
        )
    return app.queue(default_concurrency_limit=1)
