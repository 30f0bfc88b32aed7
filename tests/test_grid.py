"""class_target_grid(): shapes, titles, per-cell rescaling, targets, batching."""

import torch
from helpers import tiny_cnn
from PIL import Image

import pullbacks
from pullbacks.figures.cells import rescale_cells
from pullbacks.figures.grid import class_target_grid, grid_targets, render_grids

CLASSES = [f"class {i}" for i in range(10)]


def cnn():
    return tiny_cnn(dtype=torch.float64)


IMAGES = torch.rand(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_grid_targets_diagonal_and_seeded_extra():
    t = grid_targets([4, 2, 7], extra=2, seed=3, num_classes=10)
    assert t[:3] == [4, 2, 7] and len(t) == 5 and not set(t[3:]) & {4, 2, 7}
    assert grid_targets([4, 2, 7], extra=2, seed=3, num_classes=10) == t
    assert {tuple(grid_targets([4, 2, 7], 2, s, 10)[3:]) for s in range(6)} != {tuple(t[3:])}
    assert grid_targets([1, 1, 2], extra=0) == [1, 2]


def test_rescale_cells_each_on_its_own():
    cells = torch.stack([torch.randn(3, 4, 4) * 5 + 2, torch.randn(3, 4, 4) * 0.01, torch.zeros(3, 4, 4)])
    out = rescale_cells(cells)
    assert torch.allclose(out[:2].flatten(1).min(1).values, torch.zeros(2))
    assert torch.allclose(out[:2].flatten(1).max(1).values, torch.ones(2))
    assert torch.all(out[2] == 0.5)  # no change: mid-grey
    torch.testing.assert_close(out[1], (cells[1] - cells[1].min()) / (cells[1].max() - cells[1].min()))


def test_grid_shapes_titles_and_cells():
    model, targets = cnn(), [1, 5, 9, 0]
    grid = class_target_grid(
        model,
        IMAGES,
        targets,
        row_names=["a", "b", "c"],
        target_names=[CLASSES[t] for t in targets],
        steps=2,
        alpha=1.0,
        progress=False,
    )
    assert grid.perturbed.shape == (3, 4, 3, 16, 16) and grid.targets == targets
    axes = grid.figure.axes
    assert len(axes) == 3 * 5
    assert [ax.get_title() for ax in axes[:5]] == ["original", "class 1", "class 5", "class 9", "class 0"]
    assert [axes[r * 5].get_ylabel() for r in range(3)] == ["a", "b", "c"]
    shown = torch.as_tensor(axes[1 * 5 + 3].images[0].get_array().data)  # row 1, target 9
    expected = rescale_cells(grid.differences[1, 2].float()).permute(1, 2, 0)
    torch.testing.assert_close(shown.float(), expected)
    torch.testing.assert_close(
        torch.as_tensor(axes[5].images[0].get_array().data).float(), ((IMAGES[1] + 1) / 2).permute(1, 2, 0).float()
    )


def test_batched_grid_equals_one_pair_at_a_time():
    model, targets = cnn(), [3, 8]
    grid = class_target_grid(
        model, IMAGES, targets, row_names=list("abc"), target_names=["x", "y"], steps=3, batch_size=4, progress=False
    )
    for r in range(3):
        for c, t in enumerate(targets):
            alone = pullbacks.gradient_ascent(model, IMAGES[r : r + 1], t, steps=3)
            torch.testing.assert_close(grid.perturbed[r, c], alone[0], rtol=1e-10, atol=1e-12)


def test_render_grids_writes_both_methods_with_the_same_targets(tmp_path):
    grids = render_grids(
        cnn(),
        IMAGES,
        [2, 4, 6],
        CLASSES,
        "tiny",
        extra=1,
        seed=0,
        out=tmp_path,
        save_perturbed=True,
        steps=1,
        progress=False,
    )
    assert grids["pullback"].targets == grids["gradient"].targets
    assert grids["pullback"].targets[:3] == [2, 4, 6]
    assert not torch.allclose(grids["pullback"].perturbed, grids["gradient"].perturbed)
    for folder in ("pullback_diff", "vanilla_grad_diff", "pullback", "vanilla_grad"):
        path = tmp_path / folder / "tiny_alpha_20_steps_1.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.width > 500
    assert grids["pullback"].files == {
        "diff": tmp_path / "pullback_diff" / "tiny_alpha_20_steps_1.jpg",
        "perturbed": tmp_path / "pullback" / "tiny_alpha_20_steps_1.jpg",
    }
    assert grids["gradient"].files["diff"] == tmp_path / "vanilla_grad_diff" / "tiny_alpha_20_steps_1.jpg"
