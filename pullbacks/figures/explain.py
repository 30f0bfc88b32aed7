"""``explain_image()``: one image, one target: clean, perturbed and their difference,
with the model's top-5 classes before and after (the CLI's ``explain`` and the
notebook explorer's callback)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..core.ascent import gradient_ascent
from ..core.options import AscentOptions, build
from .cells import rescale_cells


@dataclass
class Explanation:
    """``clean`` and ``perturbed`` are (3, H, W) in [-1, 1]; ``top5_*`` are
    (class name, probability) pairs; ``figure`` shows clean | perturbed | difference."""

    clean: Tensor
    perturbed: Tensor
    target: int
    target_name: str
    top5_before: list[tuple[str, float]]
    top5_after: list[tuple[str, float]]
    figure: Figure

    @property
    def difference(self) -> Tensor:
        return self.perturbed - self.clean

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        """Write the figure (format from the suffix), whole or not at all (``save_figure``)."""
        from .grid import save_figure

        return save_figure(self.figure, path, dpi)


@torch.no_grad()
def top_k(model: nn.Module, images: Tensor, classes: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each image (all of them when there are fewer):
    ``[(name, probability), ...]``."""
    probs = model(images).softmax(dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(classes[int(i)], float(v)) for v, i in zip(vs, ids)] for vs, ids in zip(values, indices)]


def explain_image(
    model: nn.Module,
    image: Tensor,
    target: int,
    classes: Sequence[str],
    *,
    options: AscentOptions | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Explanation:
    """Ascend ``image`` (3, H, W) towards ``target`` and describe the result. Options: an
    :class:`AscentOptions` and/or its fields as keywords (``method``, ``steps``, ...)."""
    o = build(AscentOptions, options, overrides)
    if image.dim() != 3:
        raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
    x0 = image[None]
    x = gradient_ascent(model, x0, int(target), o, progress=progress)
    before, after = top_k(model, torch.cat([x0, x]), classes)
    name = classes[int(target)]
    figure = draw_explanation(x0[0], x[0], name, before, after, o.method, o.steps)
    return Explanation(x0[0].detach(), x[0].detach(), int(target), name, before, after, figure)


def _top5_text(top: Sequence[tuple[str, float]]) -> str:
    return "\n".join(f"{p:6.1%}  {n}" for n, p in top)


def draw_explanation(
    clean: Tensor,
    perturbed: Tensor,
    target_name: str,
    before: Sequence[tuple[str, float]],
    after: Sequence[tuple[str, float]],
    method: str,
    steps: int,
) -> Figure:
    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 3)
    show = [
        ((clean + 1) / 2, "clean"),
        ((perturbed + 1) / 2, f"after {steps} step(s) → {target_name}"),
        (rescale_cells(perturbed - clean), f"difference ({method})"),
    ]
    for ax, (img, title) in zip(axes, show):
        ax.imshow(img.clamp(0, 1).permute(1, 2, 0).cpu().float().numpy())
        ax.set_title(title, fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0].set_xlabel(_top5_text(before), fontsize=8, family="monospace", loc="left")
    axes[1].set_xlabel(_top5_text(after), fontsize=8, family="monospace", loc="left")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.22, wspace=0.04)
    return fig
