"""The notebook's helpers for reproducing the paper's figures (``pullbacks.ipynb``).

    for setup in paper_setups(["resnet50", "vgg11_bn", "densenet121"], device="auto"):
        print(setup.message)                      # one line per model
        if not setup.duplicate:
            figures = paper_grids(setup, steps=5)  # media/pullback_diff/resnet50_alpha_20_steps_5.jpg, ...

:func:`paper_setup` loads a model and the paper's five Imagenette rows. When the weights
or the data set cannot be had (no internet, nothing cached) it falls back to the embedded
``efficientnet_lite0`` and the built-in photos, and says so in one line, so the notebook
still runs top to bottom offline.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..core.options import AscentOptions, given
from ..core.recipes import DEFAULT_RECIPE, recipe_values
from ..figures.grid import Grid, grid_file_name, render_grids
from ..figures.sweep import DEFAULT_TEMPERATURES, temperature_sweep
from ..images import DataUnavailableError
from ..models import OFFLINE_MODEL, LoadedModel, WeightsUnavailableError, load_model, resolve_device
from ..sources import Item, resolve

__all__ = [
    "DATA_SOURCES",
    "PaperFigures",
    "PaperSetup",
    "paper_grids",
    "paper_setup",
    "paper_setups",
    "paper_sweep",
    "show_image",
    "sweep_file",
]

DATA_SOURCES = ("imagenette", "builtin")
SWEEP_FOLDER = "temperature_sweep"


@dataclass
class PaperSetup:
    """A model and the grid's rows, ready to render.

    ``requested``: the model asked for; ``loaded.name`` the one actually used (the
    embedded model after a fallback). ``data``: ``"imagenette"`` or ``"builtin"``, the rows
    actually used. ``message``: one line saying what is used and why. ``details``: the
    full error messages of anything that failed (they name local folders, so the
    notebook does not print them). ``duplicate``: the same model and rows were already
    set up earlier in :func:`paper_setups` (a fallback repeated), nothing new to render.
    """

    requested: str
    loaded: LoadedModel
    photos: list[Item]  # the rows (pullbacks.sources)
    data: str
    message: str
    fallback: bool = False
    details: list[str] = field(default_factory=list)
    duplicate: bool = False

    @property
    def images(self) -> Tensor:
        """(rows, 3, 224, 224) in [-1, 1], on the model's device."""
        return torch.stack([p.image for p in self.photos]).to(self.loaded.device)  # type: ignore[misc]  # loaded photos

    @property
    def labels(self) -> list[int]:
        return [p.label for p in self.photos]  # type: ignore[misc]  # the notebook's rows are labelled

    @property
    def row_names(self) -> list[str]:
        return [p.name for p in self.photos]


class _DropDownloadNotices:
    """A stream that passes everything on except download/extract notices, which print
    local paths (``Downloading: "url" to /home/...``); progress bars still show."""

    _PREFIXES = ("Downloading: ", "Downloading ", "Extracting ", "Using downloaded ")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        if text.startswith(self._PREFIXES) or (self._dropped and text == "\n"):
            self._dropped = text != "\n"
            return len(text)
        self._dropped = False
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    with (
        contextlib.redirect_stderr(_DropDownloadNotices(sys.stderr)),
        contextlib.redirect_stdout(_DropDownloadNotices(sys.stdout)),
    ):
        yield


def _describe_weights(weights: str, model_name: str) -> str:
    if weights is None or weights == "random":
        return "random weights"
    if isinstance(weights, str) and weights == "default":
        return "embedded pretrained weights" if loaded_is_offline(model_name) else "pretrained weights"
    return f"weights from {Path(os.fspath(weights)).name}"


def paper_setup(
    model_name: str,
    data: str = "imagenette",
    device: str | None = None,
    *,
    weights: str = "default",
    imagenette_root: str | os.PathLike | None = None,
    download: bool = True,
    fallback: bool = True,
    max_rows: int | None = None,
) -> PaperSetup:
    """Load ``model_name`` and the grid's rows, falling back to what works offline.

    ``data``: ``"imagenette"`` (the paper's five validation rows, downloaded on first
    use) or ``"builtin"`` (four photos bundled with scikit-image). ``weights``:
    ``"default"`` (pretrained), ``"random"``/``None`` or a state_dict file, as in
    :func:`~pullbacks.models.load_model`. With ``fallback``, unavailable weights are
    replaced by the embedded ``efficientnet_lite0`` and unavailable Imagenette by the
    built-in photos (otherwise the error is raised). ``max_rows``: keep only the first
    rows (quick runs).
    """
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows must be None or an integer >= 1, got {max_rows!r}")
    if data not in DATA_SOURCES:
        raise ValueError(f"data must be one of {DATA_SOURCES}, got {data!r}")
    dev = resolve_device(device)
    parts: list[str] = []
    details: list[str] = []
    used_fallback = False
    try:
        with _quiet_downloads():
            loaded = load_model(model_name, weights=weights, device=dev)
        parts.append(_describe_weights(weights, model_name))
    except WeightsUnavailableError as e:
        if not fallback or loaded_is_offline(model_name):
            raise
        details.append(str(e))
        loaded = load_model(OFFLINE_MODEL, device=dev)
        used_fallback = True
        parts.append(
            "pretrained weights not cached and not downloadable (offline?), so using "
            f"the embedded {loaded.name} instead"
        )
    data_used = data
    if data == "imagenette":
        try:
            with _quiet_downloads():
                photos = resolve(["imagenette"], imagenette_root, download=download)
            parts.append(f"the paper's {len(photos)} Imagenette validation rows")
        except DataUnavailableError as e:
            if not fallback:
                raise
            details.append(str(e))
            photos, data_used, used_fallback = resolve(["builtin"]), "builtin", True
            parts.append(f"Imagenette not on disk and not downloadable, so using the {len(photos)} built-in photos")
    else:
        photos = resolve(["builtin"])
        parts.append(f"the {len(photos)} built-in photos")
    if max_rows is not None and max_rows < len(photos):
        photos = photos[:max_rows]
        parts[-1] += f", the first {max_rows} of them"
    message = f"{model_name}: " + "; ".join(parts) + f"; device {dev.type}."
    return PaperSetup(model_name, loaded, photos, data_used, message, used_fallback, details)


def loaded_is_offline(model_name: str) -> bool:
    """Whether ``model_name`` is the embedded model itself (nothing to fall back to)."""
    return str(model_name).strip().lower().replace("-", "_") == OFFLINE_MODEL


def paper_setups(
    models: Iterable[str], data: str = "imagenette", device: str | None = None, **kw: Any
) -> Iterator[PaperSetup]:
    """:func:`paper_setup` for each model, lazily (one model in memory at a time).

    ``models`` may also be one string of names separated by commas. A setup that
    repeats an earlier one (several models fell back to the same embedded
    model and photos) is yielded with ``duplicate=True`` and a message saying so.
    """
    if isinstance(models, str):  # "resnet50,vgg11_bn" or '["resnet50"]' from a command line
        models = [m for m in re.split(r"[\s,\[\]'\"]+", models) if m]
    seen: dict[tuple, str] = {}
    for name in models:
        setup = paper_setup(name, data, device, **kw)
        key = (setup.loaded.name, setup.loaded.weights, setup.data, len(setup.photos))
        if key in seen:
            setup = replace(
                setup,
                duplicate=True,
                message=(setup.message[:-1] + f"; the same as for {seen[key]} above, so not rendered again."),
            )
        else:
            seen[key] = name
        yield setup


@dataclass
class PaperFigures:
    """What :func:`paper_grids` rendered: the grids by method and the files written."""

    grids: dict[str, Grid]
    diff_files: dict[str, Path]  # method -> <out>/pullback_diff/<model>_alpha_<a>_steps_<s>.jpg
    perturbed_files: dict[str, Path]  # method -> <out>/pullback/<model>_alpha_<a>_steps_<s>.jpg

    @property
    def files(self) -> list[Path]:
        return [*self.diff_files.values(), *self.perturbed_files.values()]


def _given(overrides: dict) -> dict:
    """The notebook's parameters as options (``options.given``: None where it means nothing
    else); the notebook's spelling ``eps="recipe"`` is the recipe's value."""
    return given({k: v for k, v in overrides.items() if not (k == "eps" and v == "recipe")})


def _class_id(setup: PaperSetup, name_or_id: str | int) -> int:
    return setup.loaded.classes.index(name_or_id)


def paper_grids(
    setup: PaperSetup,
    options: AscentOptions | None = None,
    *,
    extra_class: str | int | None = "ostrich",
    seed: int = 0,
    methods: Sequence[str] = ("pullback", "gradient"),
    out: str | os.PathLike = "media",
    save_perturbed: bool = True,
    batch_size: int = 16,
    progress: bool = True,
    **overrides: Any,
) -> PaperFigures:
    """Render and save the class × target grids of ``setup`` (the paper's Figure 1).

    Columns: the rows' own classes, then ``extra_class`` (the published figure's ostrich),
    or, when it is ``None``, one class drawn at random with ``seed``. Options: an
    :class:`AscentOptions` and/or its fields as keywords (``steps=5``, ``temperature``:
    None for the model's recommended values, as in :meth:`LoadedModel.options`). Files:
    ``<out>/pullback_diff/<model>_alpha_<a>_steps_<s>.jpg`` (``vanilla_grad_diff`` for the
    gradient) and, with ``save_perturbed``, the perturbed images under ``<out>/pullback/``
    (``vanilla_grad/``).
    """
    loaded = setup.loaded
    o = loaded.options(options, **_given(overrides))
    targets = None
    if extra_class is not None:
        own = list(dict.fromkeys(setup.labels))
        extra = _class_id(setup, extra_class)
        targets = own + ([extra] if extra not in own else [])
    grids = render_grids(
        loaded.model,
        setup.images,
        setup.labels,
        loaded.classes,
        loaded.name,
        targets=targets,
        extra=1,
        seed=seed,
        methods=methods,
        out=out,
        save_perturbed=save_perturbed,
        row_names=setup.row_names,
        options=o,
        batch_size=batch_size,
        progress=progress,
    )
    diff_files = {m: g.files["diff"] for m, g in grids.items() if "diff" in g.files}
    perturbed = {m: g.files["perturbed"] for m, g in grids.items() if "perturbed" in g.files}
    return PaperFigures(grids, diff_files, perturbed)


def sweep_file(
    model_name: str, alpha: float, steps: int, out: str | os.PathLike = "media", recipe: str = DEFAULT_RECIPE
) -> Path:
    """``<out>/temperature_sweep/<model>_alpha_<a>_steps_<s>.jpg`` (named like the grids, so
    runs with other settings never overwrite each other)."""
    return Path(out) / SWEEP_FOLDER / grid_file_name(model_name, alpha, steps, recipe)


def paper_sweep(
    setup: PaperSetup,
    *,
    rows: Sequence[int] = (0,),
    target: str | int | None = None,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    options: AscentOptions | None = None,
    out: str | os.PathLike | None = "media",
    **overrides: Any,
) -> tuple[Tensor, Figure, Path | None]:
    """The temperature sweep of ``setup``'s rows ``rows`` towards ``target`` (``None``:
    each row's own class), saved as :func:`sweep_file`. Rows beyond
    the setup's (cut by ``max_rows``) are skipped; if none is left, row 0 is shown.

    Returns the differences (rows, temperatures + vanilla, 3, H, W), the figure and the
    file (``None`` without ``out``). Options: as in :func:`paper_grids` (the temperature is
    set per column).
    """
    loaded = setup.loaded
    o = loaded.options(options, **_given(overrides))
    n = len(setup.photos)
    wanted = [int(r) for r in rows]
    if any(r < 0 for r in wanted):
        raise ValueError(f"rows must be indices >= 0 of the {n} rows ({', '.join(setup.row_names)}), got {wanted}")
    rows = [r for r in wanted if r < n] or [0]  # rows cut off by max_rows are skipped
    photos = [setup.photos[r] for r in rows]
    targets = [cast(int, p.label) for p in photos] if target is None else [_class_id(setup, target)] * len(rows)
    images = torch.stack([cast(torch.Tensor, p.image) for p in photos]).to(loaded.device)
    swept = o.replace(pool_temperature=None) if o.recipe == DEFAULT_RECIPE else o  # the seed's pool follows T
    recommended = loaded.spec.settings(o.recipe).get("temperature", recipe_values(o.recipe)["temperature"])
    diffs, figure = temperature_sweep(
        loaded.model,
        images,
        targets,
        temperatures,
        options=swept,
        row_names=[p.name for p in photos],
        target_names=[loaded.classes[t] for t in targets],
        title=f"{loaded.name}: excitation pullback at temperature T ({o.recipe} recipe, {o.steps} step(s), "
        f"alpha {o.alpha:g}; recommended T = {recommended:g})",
    )
    path = None
    if out is not None:
        path = sweep_file(loaded.name, o.alpha, o.steps, out, o.recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, pil_kwargs={"quality": 92})
    return diffs, figure, path


def show_image(source: str | os.PathLike | Figure, width: int = 900, dpi: int = 80) -> Any:
    """Display a saved image file, or a figure as a JPEG, at a modest ``width`` (pixels).

    JPEG keeps a notebook's committed outputs small. Returns the IPython display object.
    """
    from io import BytesIO

    from IPython.display import Image, display

    if isinstance(source, Figure):
        buffer = BytesIO()
        source.savefig(buffer, format="jpg", dpi=dpi, pil_kwargs={"quality": 90})
        image = Image(data=buffer.getvalue(), format="jpeg", width=width)
    else:
        from PIL import Image as Picture

        with Picture.open(os.fspath(source)) as picture:
            if picture.width <= 1.5 * width:
                image = Image(filename=os.fspath(source), width=width)
            else:  # embedded at the size it is shown: the committed notebook stays small
                small = picture.convert("RGB")
                small.thumbnail((width, 10 * small.height))
                buffer = BytesIO()
                small.save(buffer, format="JPEG", quality=90)
                image = Image(data=buffer.getvalue(), format="jpeg", width=width)
    display(image)
    return image
