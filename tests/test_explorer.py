"""The explorer: the plain callback explore() and the ipywidgets box, without a browser."""

import numpy as np
import pytest
import torch
from helpers import tiny_loaded
from PIL import Image

from pullbacks.apps import explorer, service
from pullbacks.apps.explorer import explore, explorer_widget, image_options, resolve_image
from pullbacks.figures.explain import Explanation, explain_image
from pullbacks.images import DataUnavailableError, ImageLoadError
from pullbacks.models import WeightsUnavailableError


@pytest.fixture
def tiny(monkeypatch):
    """Every model name loads the tiny model (no weights read); the caches start empty."""
    explorer.clear_cache()
    calls = []

    def fake_load(name, weights="default", device=None, **kw):
        calls.append((name, weights))
        return tiny_loaded(name)

    monkeypatch.setattr(service, "load_model", fake_load)
    yield calls
    explorer.clear_cache()


def test_image_options_list_builtin_photos_and_resolve():
    options = image_options(imagenette_root="no-such-folder-here")  # Imagenette absent: left out
    assert [key for _, key in options] == ["builtin:chelsea", "builtin:coffee", "builtin:rocket", "builtin:motorcycle"]
    x, name, label = resolve_image("builtin:Chelsea")
    assert x.shape == (3, 224, 224) and name == "chelsea" and label == 285
    with pytest.raises(ValueError, match="no builtin image named 'dog'"):
        resolve_image("builtin:dog")
    with pytest.raises(DataUnavailableError):
        resolve_image("imagenette:tench", imagenette_root="no-such-folder-here")
    with pytest.raises(ImageLoadError):
        resolve_image("no/such/file.png")


def test_explore_matches_explain_image(tiny):
    loaded = tiny_loaded()
    image, _, _ = resolve_image("builtin:coffee")
    result = explore("builtin:coffee", "resnet50", "tabby", steps=2, alpha=5.0, eps=100.0)
    expected = explain_image(
        loaded.model, image, 281, loaded.classes, steps=2, alpha=5.0, eps=100.0, temperature=0.7, pool_temperature=0.7
    )  # the model's recommended T
    assert isinstance(result, Explanation)
    assert result.target == 281 and result.target_name == "tabby"
    torch.testing.assert_close(result.perturbed, expected.perturbed)
    assert [n for n, _ in result.top5_before] == [n for n, _ in expected.top5_before]
    assert len(result.top5_after) == 5
    assert [ax.get_title() for ax in result.figure.axes][2] == "difference (pullback)"
    assert tiny == [("resnet50", "default")]
    explore("builtin:coffee", "resnet50", 281, steps=1)
    assert len(tiny) == 1  # the model is loaded once, then cached


@pytest.mark.slow  # over 2 s
def test_explore_targets_settings_and_sources(tiny, tmp_path):
    loaded = tiny_loaded()
    # empty target: a photo's own class
    assert explore("builtin:rocket", loaded, "", steps=1).target == 657
    assert explore("builtin:rocket", loaded, None, steps=1).target == 657
    assert explore("builtin:rocket", loaded, "9", steps=1).target_name == "ostrich"
    # a file: no label, so its own class is the model's prediction
    arr = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "photo.png")
    result = explore(tmp_path / "photo.png", loaded, "", steps=1)
    with torch.no_grad():
        assert result.target == int(loaded.model(result.clean[None]).argmax())
    # a tensor; temperature and eps given explicitly, 0 meaning "recommended" and "no projection"
    x = resolve_image("builtin:chelsea")[0]
    a = explore(x, loaded, 3, steps=2, alpha=30.0, eps=10.0, temperature=2.0)
    b = explain_image(loaded.model, x, 3, loaded.classes, steps=2, alpha=30.0, eps=10.0, temperature=2.0)
    torch.testing.assert_close(a.perturbed, b.perturbed)
    c = explore(x, loaded, 3, steps=2, alpha=30.0, eps=0, temperature=0)
    d = explain_image(loaded.model, x, 3, loaded.classes, steps=2, alpha=30.0, eps=None, temperature=0.7)
    torch.testing.assert_close(c.perturbed, d.perturbed)
    g = explore(x, loaded, 3, steps=1, method="gradient")
    assert g.figure.axes[2].get_title() == "difference (gradient)"


def test_explore_errors(tiny):
    loaded = tiny_loaded()
    with pytest.raises(ValueError, match="unknown class name"):
        explore("builtin:chelsea", loaded, "not a class", steps=1)
    with pytest.raises(ValueError, match="out of range"):
        explore("builtin:chelsea", loaded, 1000, steps=1)
    with pytest.raises(ValueError, match="eps"):
        explore("builtin:chelsea", loaded, 1, eps=-1, steps=1)
    with pytest.raises(ValueError, match="unknown model"):
        explore("builtin:chelsea", "resnet5O", 1, steps=1)


@pytest.mark.slow
def test_explore_with_the_embedded_model():
    explorer.clear_cache()
    result = explore("builtin:chelsea", "efficientnet_lite0", "tabby", steps=1)
    assert result.top5_before[0][0] in ("tiger cat", "Egyptian cat", "tabby")
    assert result.clean.shape == result.perturbed.shape == (3, 224, 224)
    assert 0 < result.difference.flatten().norm() <= 20.0 + 1e-3


def test_widget_drives_the_callback(tiny, capsys, monkeypatch):
    box = explorer_widget(device="cpu", image="builtin:coffee", model="efficientnet_lite0", steps=1)
    c = box.controls
    assert set(c) == {"image", "path", "model", "target", *explorer.SHOWN, *explorer.MORE}
    from pullbacks.core.options import FIELDS

    assert set(explorer.SHOWN) | set(explorer.MORE) | {"rules"} == set(FIELDS)  # rules: explorer_widget(rules=...)
    assert c["temperature"].value == pytest.approx(1.0)  # efficientnet_lite0's recommended T
    c["model"].value = "resnet50"
    assert c["temperature"].value == pytest.approx(0.3)  # follows the model
    c["recipe"].value = "semantic"  # and the recipe: the authors' ResNet50 values
    assert (c["temperature"].value, c["steps"].value, c["alpha"].value, c["eps"].value) == (0.5, 2, 5.0, 0.0)
    c["recipe"].value = "excitation"
    assert (c["temperature"].value, c["steps"].value, c["eps"].value) == (pytest.approx(0.3), 5, 100.0)
    c["target"].value = "church"
    result = box.run()
    assert result.target_name == "church" and tiny[-1][0] == "resnet50"
    c["path"].value = "no/such/image.jpg"  # a file path overrides the dropdown; errors are one line
    assert box.run() is None
    c["path"].value = ""
    c["target"].value = "no such class"
    assert box.run() is None
    printed = capsys.readouterr().out
    assert "ImageLoadError: cannot load image" in printed and "unknown class name" in printed
    assert "Traceback" not in printed
    button = [w for w in box.children[1].children if getattr(w, "description", "") == "Explain"]
    assert len(button) == 1
    c["path"].value, c["target"].value = "", "church"  # the generated boxes reach the options
    c["gate"].value, c["temperatures"].value, c["clip"].value, c["replay"].value = (
        "normal_cdf",
        "gelu=0.5",
        "none",
        False,
    )
    seen = {}
    real = explorer.explain_image

    def spy(model, x, target, classes, *, options):
        seen["o"] = options
        return real(model, x, target, classes, options=options)

    monkeypatch.setattr(explorer, "explain_image", spy)
    box.run()
    o = seen["o"]
    assert (o.gate, o.temperatures["gelu"], o.clip, o.replay) == ("normal_cdf", 0.5, None, False)


def test_widget_reports_unavailable_weights_in_one_line(monkeypatch, capsys):
    explorer.clear_cache()

    def offline(name, **kw):
        raise WeightsUnavailableError(f"Pretrained weights for {name!r} are not available: no internet.\nmore")

    monkeypatch.setattr(service, "load_model", offline)
    box = explorer_widget(device="cpu", model="resnet50", run=True)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "Error" in line]  # (clear_output prints escapes here)
    # one line, the whole message (its fix included)
    assert lines == ["WeightsUnavailableError: Pretrained weights for 'resnet50' are not available: no internet. more"]
    assert box.run() is None
    explorer.clear_cache()
