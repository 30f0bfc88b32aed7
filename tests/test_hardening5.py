"""Hardening round 5: shapes and devices named, composed methods that explain themselves, images
too small to mean anything, interrupted runs that leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, snapshot, tiny_cnn
from PIL import Image

import pullbacks
from pullbacks.apps import cli
from pullbacks.images import MIN_SIDE, ImageLoadError, load_image, preprocess

# --------------------------------------------------------------------------- shapes and devices

SHAPES = {  # input shape -> what the message must say
    (3, 16, 16): r"\(N, C, H, W\): if this is one image, add a batch dimension: x\[None\] \(shape \(1, 3, 16, 16\)\)",
    (4, 3, 16): r"\(N, C, H, W\)",  # a 3-D tensor that is not one image either
    (3, 16): r"\(N, C, H, W\), a text model \(N, L\) token ids or \(N, L, D\) embeddings",
    (1, 2, 3, 16, 16): r"x.flatten\(0,1\)",
    (1, 1, 1, 3, 16, 16): r"x.flatten\(0,2\)",
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("call", ["pullback", "ascent"])
def test_inputs_of_the_wrong_rank_name_the_expected_shape_and_the_fix(shape, call):
    model = tiny_cnn()
    before = snapshot(model)
    x = torch.rand(shape) * 2 - 1
    with pytest.raises(ValueError, match=SHAPES[shape]):
        if call == "pullback":
            pullbacks.excitation_pullback(model, x, 1)
        else:
            pullbacks.gradient_ascent(model, x, 1, steps=1)
    assert_unchanged(model, before)


def test_a_model_on_the_meta_device_is_refused_clearly():
    model = tiny_cnn().to("meta")
    with pytest.raises(ValueError, match="'meta' device, which holds no values.*load its weights first"):
        pullbacks.excitation_pullback(model, torch.rand(1, 3, 16, 16), 1)


def test_a_model_and_inputs_on_different_devices_name_both_and_the_fix():
    model = tiny_cnn()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"inputs are on the 'meta' device, which holds no values"):
        pullbacks.excitation_pullback(model, x.to("meta"), 1)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"the model is on cuda:0 but the inputs are on cpu.*x.to\('cuda:0'\)"):
            pullbacks.excitation_pullback(model.cuda(), x, 1)


# --------------------------------------------------------------------------- composed methods


@pytest.mark.slow
def test_a_layer_attribution_with_no_gate_after_its_layer_says_so():
    """Captum's LayerGradCam on ResNet's last block (the issue's case): the gated calls all run
    before the layer, so the pullback there is the gradient, and the error says exactly that."""
    captum = pytest.importorskip("captum.attr", reason="the evaluate extra (captum) is not installed")
    from pullbacks.models import load_model

    model = load_model("resnet18", weights="random").model
    layers = dict(model.named_modules())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with pytest.raises(ValueError, match=r"no call that pullbacks gates lies between .*relu 17.*equals the vanilla"):
        captum.LayerGradCam(pullbacks.SoftGated(model), layers["net.layer4"]).attribute(x, 1)
    ok = captum.LayerGradCam(pullbacks.SoftGated(model), layers["net.layer3"]).attribute(x, 1)  # gates after it
    assert ok.shape == (1, 1, 4, 4)


# --------------------------------------------------------------------------- small images


@pytest.mark.parametrize("size", [(1, 1), (31, 200), (200, 16), (8, 8)])
def test_images_under_the_smallest_side_are_refused_naming_the_size(tmp_path, size):
    path = tmp_path / "small.png"
    Image.new("RGB", size, (200, 30, 30)).save(path)
    with pytest.raises(ImageLoadError, match=rf"{size[0]}×{size[1]} pixels, under {MIN_SIDE} a side.*224×224"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="under 32 a side"):
        preprocess(np.zeros((size[1], size[0], 3), np.uint8))
    assert preprocess(np.zeros((32, 40, 3), np.uint8)).shape == (3, 224, 224)  # the smallest accepted


def test_the_cli_refuses_a_tiny_image_in_one_line(tmp_path, capsys):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(path)
    code = cli.main(["explain", str(path), "--weights", "random", "--target", "3", "--out", str(tmp_path / "o.jpg")])
    err = capsys.readouterr().err
    assert code == 2 and "1×1 pixels, under 32 a side" in err and "Traceback" not in err


# --------------------------------------------------------------------------- interrupted runs


def test_an_interrupted_grid_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    import pullbacks.figures.grid as grid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "render_grids", interrupted)
    out = tmp_path / "new" / "grids"
    code = cli.main(["grid", "--model", "resnet18", "--weights", "random", "--out", str(out)])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the folders it made are gone
    kept = tmp_path / "kept"
    (kept / "grids").mkdir(parents=True)
    (kept / "grids" / "finished.jpg").write_bytes(b"done")
    assert cli.main(["grid", "--model", "resnet18", "--weights", "random", "--out", str(kept / "grids")]) == 130
    assert (kept / "grids" / "finished.jpg").read_bytes() == b"done"  # what was finished stays


def test_a_figure_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import matplotlib.figure

    from pullbacks.figures.grid import save_figure

    figure = matplotlib.figure.Figure(figsize=(1, 1))

    def interrupted(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"half a JPEG")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_figure(figure, tmp_path / "cell.jpg")
    assert list(tmp_path.iterdir()) == []
