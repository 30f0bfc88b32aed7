"""Drawing shared by every figure: per-cell min-max rescaling and a table of pictures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor


def rescale_cells(cells: Tensor) -> Tensor:
    """Min–max rescale each (3, H, W) cell of ``(..., 3, H, W)`` on its own to [0, 1];
    a constant cell becomes 0.5 (mid-grey)."""
    flat = cells.flatten(-3)
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-30), torch.full_like(flat, 0.5))
    return out.view_as(cells)


def draw_cells(
    images: Tensor,
    cells: Tensor,
    col_titles: Sequence[str],
    row_names: Sequence[str],
    *,
    title: str | None = None,
    cell_inches: float = 1.9,
) -> Figure:
    """A table of pictures: column 0 the clean ``images`` (R, 3, H, W) in [-1, 1], then the
    ``cells`` (R, C, 3, H, W), already in [0, 1], under ``col_titles``; rows labelled."""
    rows, cols = cells.shape[:2]
    clean = ((images.float().cpu() + 1) / 2).clamp(0, 1)
    height = cell_inches * rows + (0.6 if title else 0.35)
    fig = Figure(figsize=(cell_inches * (cols + 1), height))
    axes = fig.subplots(rows, cols + 1, squeeze=False, gridspec_kw=dict(wspace=0.02, hspace=0.02))
    for r in range(rows):
        for c in range(cols + 1):
            ax = axes[r, c]
            ax.imshow((clean[r] if c == 0 else cells[r, c - 1]).permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else col_titles[c - 1], fontsize=9)
        axes[r, 0].set_ylabel(row_names[r], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.03, right=0.995, bottom=0.005, top=1 - (0.6 if title else 0.3) / height)
    return fig
