"""Pictures of the trained networks on the generated task: the class × target grids (does the
ascent towards a class draw that class's object?) and maps next to the masks.

    python -m pullbacks.experiments.figures --out media/groundtruth
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ..groundtruth.task import CLASSES, SCALE, generate
from ..groundtruth.weights import FAMILIES, PREFIX

SEED = 2_000_003  # the evaluation's images (sources.GROUNDTRUTH_SEED): never seen in training


def one_per_class(seed: int = SEED, search: int = 200) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """The first image of each class among ``generate(search, seed)``: (images, labels, masks)."""
    x, y, m = generate(search, seed)
    first = [int((y == c).nonzero()[0]) for c in range(len(CLASSES))]
    return x[first], [int(y[i]) for i in first], m[first]


def grids(
    family: str, out: str | Path, steps: int = 5, alpha: float = 20 * SCALE, eps: float = 100 * SCALE
) -> dict[str, Path]:
    """The class × target grids (pullback and gradient) of ``groundtruth/<family>``, written under ``out``."""
    from ..figures.grid import DIFF_FOLDERS, grid_file_name, render_grids
    from ..models import load_model

    net = load_model(PREFIX + family)
    images, labels, _ = one_per_class()
    o = net.options(steps=steps, alpha=alpha, eps=eps)
    render_grids(
        net.model,
        images,
        labels,
        list(CLASSES),
        f"groundtruth_{family}",
        targets=list(range(len(CLASSES))),
        out=out,
        options=o,
        progress=False,
    )
    name = grid_file_name(f"groundtruth_{family}", o.alpha, o.steps, o.recipe)
    return {m: Path(out) / folder / name for m, folder in DIFF_FOLDERS.items()}


def maps_with_masks(
    family: str, methods: Sequence[str] = ("pullback", "gradient", "integrated_gradients", "edge"), rows: int = 6
) -> Figure:
    """For ``rows`` images: the image, its mask, and each method's positive heat map ``max(Σ_c a_c, 0)``
    for the true class, each scaled to its own maximum."""
    from ..evaluation import attribute
    from ..evaluation.methods import METHODS, Settings
    from ..models import load_model

    net = load_model(PREFIX + family)
    x, y, m = generate(rows, SEED)
    s = Settings(ascent=net.options())
    maps = {k: attribute(net.model, x, y, k, s).sum(1).clamp(min=0) for k in methods}
    fig = Figure(figsize=(1.6 * (2 + len(methods)), 1.6 * rows + 0.4))
    axes = fig.subplots(rows, 2 + len(methods), squeeze=False, gridspec_kw=dict(wspace=0.03, hspace=0.03))
    titles = ["image", "mask (the evidence)"] + [METHODS[k].label for k in methods]
    for r in range(rows):
        cells = [((x[r] + 1) / 2).clamp(0, 1).permute(1, 2, 0), m[r].float()]
        cells += [maps[k][r] / maps[k][r].max().clamp(min=1e-12) for k in methods]
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(cell.numpy(), cmap=None if c == 0 else "magma", vmin=0, vmax=1)
            if c >= 2:
                ax.contour(m[r].float().numpy(), levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(CLASSES[int(y[r])], fontsize=8)
    fig.suptitle(f"groundtruth/{family}: positive relevance for the true class, the mask outlined", fontsize=9)
    fig.subplots_adjust(left=0.03, right=0.995, bottom=0.005, top=0.93)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pullbacks.experiments.figures", description=__doc__.splitlines()[0])
    p.add_argument("families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--out", default="out/groundtruth/figures")
    args = p.parse_args(argv)
    for family in args.families:
        for path in grids(family, args.out).values():
            print(path)
        path = Path(args.out) / "groundtruth_maps" / f"groundtruth_{family}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        maps_with_masks(family).savefig(path, dpi=110)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
