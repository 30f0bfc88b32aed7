"""``class_target_grid()``: the paper's class × target figure (docs/method.md, "The figure").

Every (image, target) pair is one sample of a batched ``gradient_ascent``; the cell shown
is ``x_steps - x0``, min–max rescaled on its own (a cell with no change is mid-grey).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..core.ascent import gradient_ascent
from ..core.options import AscentOptions, build, positive_integer
from ..core.recipes import DEFAULT_RECIPE
from .cells import draw_cells, rescale_cells


@dataclass
class Grid:
    """The tensors of a class × target grid, and its figure (drawn when first asked for).

    ``images``: (R, 3, H, W) clean inputs in [-1, 1]; ``perturbed``: (R, C, 3, H, W), the
    result of the ascent of image r towards target c; ``targets``: the C class ids.
    """

    images: Tensor
    perturbed: Tensor
    targets: list[int]
    row_names: list[str]
    target_names: list[str]
    method: str
    title: str | None = None
    files: dict = field(default_factory=dict)  # what render_grids wrote: {"diff": path, "perturbed": path}

    @functools.cached_property
    def figure(self) -> Figure:
        """Column 0 the clean images, then the rescaled difference for each target (:func:`draw_grid`)."""
        return draw_grid(self, title=self.title)

    @property
    def differences(self) -> Tensor:
        """(R, C, 3, H, W): ``perturbed - images``, the attribution the paper shows."""
        return self.perturbed - self.images[:, None]

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        """Write the figure (format from the suffix, e.g. ``.jpg``), creating folders."""
        return save_figure(self.figure, path, dpi)


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix; JPEG at quality 92), creating folders.
    The file appears whole or not at all: it is written beside ``path`` and renamed (an
    interrupted save leaves nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    try:
        figure.savefig(
            part,
            dpi=dpi,
            format=path.suffix.lstrip(".").lower() or None,
            pil_kwargs={"quality": 92} if path.suffix.lower() in (".jpg", ".jpeg") else None,
        )
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def grid_targets(row_labels: Sequence[int], extra: int = 1, seed: int = 0, num_classes: int = 1000) -> list[int]:
    """The grid's columns: the rows' own classes (in order, without repeats), then
    ``extra`` classes drawn uniformly from the remaining ones with a fixed ``seed``."""
    own = list(dict.fromkeys(int(c) for c in row_labels))
    rest = torch.tensor([c for c in range(num_classes) if c not in own])
    if extra > len(rest):
        raise ValueError(f"cannot draw {extra} extra classes: only {len(rest)} classes are left")
    pick = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[:extra]
    return own + rest[pick].tolist()


def class_target_grid(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[int],
    *,
    row_names: Sequence[str],
    target_names: Sequence[str],
    options: AscentOptions | None = None,
    batch_size: int = 16,
    progress: bool = True,
    title: str | None = None,
    **overrides: Any,
) -> Grid:
    """Run the ascent for every (image, target) pair, ``batch_size`` pairs at a time,
    and draw the grid: the clean image, then one column per target.

    Options: an :class:`AscentOptions` and/or its fields as keywords (``method``,
    ``steps``, ``temperature``, ...). Each pair is an independent sample of
    ``gradient_ascent``, so the result does not depend on ``batch_size``.
    """
    o = build(AscentOptions, options, overrides)
    positive_integer(batch_size, "batch_size")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (rows, 3, H, W), got {tuple(images.shape)}")
    rows, cols = images.shape[0], len(targets)
    if len(row_names) != rows or len(target_names) != cols:
        raise ValueError(f"need {rows} row names and {cols} target names, got {len(row_names)} and {len(target_names)}")
    pair_images = images.repeat_interleave(cols, dim=0)  # (R*C, 3, H, W): row-major
    pair_targets = torch.tensor(list(targets), dtype=torch.long).repeat(rows)
    results = []
    with tqdm(total=rows * cols, desc=f"{o.method} grid", unit="pair", disable=not progress) as bar:
        for start in range(0, rows * cols, batch_size):
            chunk = slice(start, start + batch_size)
            results.append(gradient_ascent(model, pair_images[chunk], pair_targets[chunk].to(images.device), o))
            bar.update(len(results[-1]))
    perturbed = torch.cat(results).view(rows, cols, *images.shape[1:])
    grid = Grid(
        images.detach(),
        perturbed.detach(),
        [int(t) for t in targets],
        list(row_names),
        list(target_names),
        o.method,
        title,
    )
    return grid


def draw_grid(grid: Grid, title: str | None = None, cell_inches: float = 1.9, show: str = "difference") -> Figure:
    """The figure: column 0 the clean images, then one column per target showing the
    rescaled difference (``show="difference"``) or the perturbed image (``"perturbed"``)."""
    if show == "difference":
        cells = rescale_cells(grid.differences.float().cpu())
    elif show == "perturbed":
        cells = ((grid.perturbed.float().cpu() + 1) / 2).clamp(0, 1)
    else:
        raise ValueError(f"show must be 'difference' or 'perturbed', got {show!r}")
    return draw_cells(grid.images, cells, grid.target_names, grid.row_names, title=title, cell_inches=cell_inches)


# Where the figures land (the paper's names): <out>/<folder>/<model>_alpha_<a>_steps_<s>.jpg
DIFF_FOLDERS = {"pullback": "pullback_diff", "gradient": "vanilla_grad_diff"}
PERTURBED_FOLDERS = {"pullback": "pullback", "gradient": "vanilla_grad"}
LABELS = {"pullback": "excitation pullback", "gradient": "vanilla gradient"}


def grid_file_name(model_name: str, alpha: float, steps: int, recipe: str = DEFAULT_RECIPE) -> str:
    """``<model>_alpha_<a>_steps_<s>.jpg``; another recipe than the default adds its name
    (``<model>_semantic_alpha_...``), so the two recipes' figures never overwrite each other."""
    tag = "" if recipe == DEFAULT_RECIPE else f"_{recipe}"
    return f"{model_name.replace('/', '_')}{tag}_alpha_{alpha:g}_steps_{steps}.jpg"


def render_grids(
    model: nn.Module,
    images: Tensor,
    row_labels: Sequence[int],
    classes: Sequence[str],
    model_name: str,
    *,
    targets: Sequence[int] | None = None,
    extra: int = 1,
    seed: int = 0,
    methods: Sequence[str] = ("pullback", "gradient"),
    out: str | os.PathLike | None = "media",
    save_perturbed: bool = False,
    row_names: Sequence[str] | None = None,
    options: AscentOptions | None = None,
    batch_size: int = 16,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Grid]:
    """The paper's figure for each method, on the same images and targets.

    ``targets`` default to the rows' own classes plus ``extra`` classes drawn with
    ``seed``. With ``out``, each grid is saved as
    ``<out>/pullback_diff/<model>_alpha_<a>_steps_<s>.jpg`` (``vanilla_grad_diff`` for the
    gradient), and with ``save_perturbed`` the perturbed images under
    ``<out>/pullback/`` (``vanilla_grad/``). Options: an :class:`AscentOptions` and/or its
    fields as keywords (``steps``, ``alpha``, ``temperature``, ...); ``method`` is each of
    ``methods`` in turn.
    """
    o = build(AscentOptions, options, overrides)
    targets = grid_targets(row_labels, extra, seed, len(classes)) if targets is None else list(targets)
    row_names = [classes[int(c)] for c in row_labels] if row_names is None else list(row_names)
    grids = {}
    for method in methods:  # every grid is computed before any file is written: no mixed pairs
        grid = class_target_grid(
            model,
            images,
            targets,
            row_names=row_names,
            target_names=[classes[t] for t in targets],
            options=o.replace(method=method),
            batch_size=batch_size,
            progress=progress,
            title=f"{model_name}: {LABELS[method]}"
            + (f" ({o.recipe} recipe)" if method == "pullback" else "")
            + f", {o.steps} step(s), alpha {o.alpha:g}",
        )
        grids[method] = grid
    for method, grid in grids.items():
        if out is not None:
            name = grid_file_name(model_name, o.alpha, o.steps, o.recipe)
            grid.files["diff"] = grid.save(Path(out) / DIFF_FOLDERS[method] / name)
            if save_perturbed:
                fig = draw_grid(grid, title=f"{model_name}: perturbed images ({LABELS[method]})", show="perturbed")
                grid.files["perturbed"] = save_figure(fig, Path(out) / PERTURBED_FOLDERS[method] / name)
    return grids
