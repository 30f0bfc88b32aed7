"""temperature_sweep(): one column per temperature plus the vanilla gradient, and the limits."""

import pytest
import torch
from helpers import tiny_cnn

from pullbacks import gradient_ascent
from pullbacks.figures.sweep import DEFAULT_TEMPERATURES, temperature_sweep


def cnn():
    return tiny_cnn(dtype=torch.float64)


IMAGES = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
SMALL = dict(steps=2, alpha=0.5)  # small steps: the clamp to [-1, 1] never binds


def test_columns_are_the_ascents_at_each_temperature_then_vanilla():
    model, temps = cnn(), [0.1, 1.0]
    diffs, fig = temperature_sweep(model, IMAGES, [3, 7], temps, **SMALL)
    assert diffs.shape == (2, 3, 3, 16, 16)
    for k, t in enumerate(temps):
        expected = gradient_ascent(model, IMAGES, [3, 7], temperature=t, **SMALL) - IMAGES
        torch.testing.assert_close(diffs[:, k], expected)
    vanilla = gradient_ascent(model, IMAGES, [3, 7], method="gradient", **SMALL) - IMAGES
    torch.testing.assert_close(diffs[:, -1], vanilla)
    axes = fig.axes
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["original", "T = 0.1", "T = 1", "vanilla gradient"]


def test_single_image_gives_one_row_and_names():
    diffs, fig = temperature_sweep(
        cnn(), IMAGES[0], 3, [0.5], vanilla=False, row_names=["img"], target_names=["cls 3"], title="sweep", **SMALL
    )
    assert diffs.shape == (1, 3, 16, 16)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylabel() == "img → cls 3"
    assert fig._suptitle.get_text() == "sweep"


def test_low_temperature_approaches_vanilla_and_high_linearises():
    model = cnn()
    diffs, _ = temperature_sweep(model, IMAGES / 2, 3, [1e-6, 1e4], steps=1, alpha=0.2)  # no clamping
    # T -> 0: the soft gates become the hard ones, the pullback the vanilla gradient
    torch.testing.assert_close(diffs[:, 0], diffs[:, -1], atol=1e-4, rtol=1e-3)
    # T -> infinity: every gate is 1/2, the step no longer depends on the image
    cos = torch.nn.functional.cosine_similarity(diffs[0, 1].flatten(), diffs[1, 1].flatten(), dim=0)
    assert cos > 0.999
    cos_vanilla = torch.nn.functional.cosine_similarity(diffs[0, 2].flatten(), diffs[1, 2].flatten(), dim=0)
    assert cos_vanilla < 0.99


def test_default_temperatures_span_both_limits():
    assert min(DEFAULT_TEMPERATURES) <= 0.1 and max(DEFAULT_TEMPERATURES) >= 2
    assert list(DEFAULT_TEMPERATURES) == sorted(DEFAULT_TEMPERATURES)


@pytest.mark.parametrize(
    "temps, error", [([], ValueError), ([0.3, 0], ValueError), ([float("nan")], ValueError), (["hot"], TypeError)]
)
def test_bad_temperatures(temps, error):
    with pytest.raises(error):
        temperature_sweep(cnn(), IMAGES, 3, temps, **SMALL)


def test_bad_shapes_and_target_counts():
    with pytest.raises(ValueError, match="one target per image"):
        temperature_sweep(cnn(), IMAGES, [1, 2, 3], [1.0], **SMALL)
    with pytest.raises(ValueError, match="shape"):
        temperature_sweep(cnn(), IMAGES[0, 0], 1, [1.0], **SMALL)
