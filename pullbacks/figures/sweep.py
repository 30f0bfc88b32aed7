"""``temperature_sweep()``: how the pullback changes with the gate temperature T.

One row per image: the clean image, then the difference ``x_steps - x0`` of the ascent
towards the target for each temperature, then the vanilla gradient for reference. Low T
approaches the vanilla gradient (docs/method.md, "The gates"), high T linearises the network, so the
difference stops depending on the image. Used to choose a model's default temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..core.ascent import gradient_ascent
from ..core.options import AscentOptions, build, temperature
from .cells import draw_cells, rescale_cells

__all__ = ["DEFAULT_TEMPERATURES", "temperature_sweep", "draw_sweep"]

DEFAULT_TEMPERATURES = (0.05, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0)


def _check_temperatures(temperatures: Sequence[float]) -> list[float]:
    if isinstance(temperatures, (str, bytes)) or not hasattr(temperatures, "__iter__"):
        raise TypeError(f"temperatures must be a sequence of numbers, got {temperatures!r}")
    values = [temperature(t, "each of temperatures") for t in temperatures]
    if not values:
        raise ValueError("temperatures must not be empty")
    return values


def temperature_sweep(
    model: nn.Module,
    images: Tensor,
    targets: int | Sequence[int],
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    *,
    options: AscentOptions | None = None,
    vanilla: bool = True,
    row_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    title: str | None = None,
    **overrides: Any,
) -> tuple[Tensor, Figure]:
    """Ascend ``images`` towards ``targets`` once per temperature (and once along the
    vanilla gradient when ``vanilla``); return the differences and their figure.

    ``images``: (N, 3, H, W), N rows with one target each (``targets`` an int for all, or N
    ints), like every function of the package; one (3, H, W) image is taken as N = 1.
    Options: an :class:`AscentOptions` and/or its fields as
    keywords; ``temperature`` and ``method`` are set per column, and ``pool_temperature``
    is the max-pool temperature for every column (``None``: each column's ``temperature``,
    like the demo).
    Returns ``differences`` of shape (K, 3, H, W) for one image, (N, K, 3, H, W) for a
    batch, with K = ``len(temperatures)`` (+1, the last, for the vanilla gradient), and
    the figure.
    """
    o = build(AscentOptions, options, overrides)
    temps = _check_temperatures(temperatures)
    single = images.dim() == 3
    batch = images[None] if single else images
    if batch.dim() != 4:
        raise ValueError(f"images must have shape (N, 3, H, W) (or one image (3, H, W)), got {tuple(images.shape)}")
    n = batch.shape[0]
    targets = [int(targets)] * n if isinstance(targets, int) else [int(t) for t in targets]
    if len(targets) != n:
        raise ValueError(f"need one target per image: {n} images, {len(targets)} targets")
    x0 = batch.detach()
    columns = [gradient_ascent(model, x0, targets, o.replace(method="pullback", temperature=t)) - x0 for t in temps]
    titles = [f"T = {t:g}" for t in temps]
    if vanilla:
        columns.append(gradient_ascent(model, x0, targets, o.replace(method="gradient")) - x0)
        titles.append("vanilla gradient")
    diffs = torch.stack(columns, dim=1).detach()  # (N, K, 3, H, W)
    if row_names is None:
        row_names = [""] * n
    if target_names is not None and len(target_names) == n:
        row_names = [f"{r} → {t}" if r else f"→ {t}" for r, t in zip(row_names, target_names)]
    figure = draw_sweep(x0, diffs, titles, list(row_names), title=title)
    return (diffs[0] if single else diffs), figure


def draw_sweep(
    images: Tensor,
    diffs: Tensor,
    titles: Sequence[str],
    row_names: Sequence[str],
    *,
    title: str | None = None,
    cell_inches: float = 1.7,
) -> Figure:
    """Clean image, then one min–max rescaled difference per column, one row per image."""
    return draw_cells(
        images, rescale_cells(diffs.float().cpu()), titles, row_names, title=title, cell_inches=cell_inches
    )
