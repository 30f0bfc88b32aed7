"""The command line, end to end on the embedded model, and its one-line errors."""

import subprocess
import sys

import pytest
from PIL import Image

from pullbacks.apps.cli import main
from pullbacks.images import builtin_photos


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for p in builtin_photos()[:2]:
        Image.fromarray(((p.image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(folder / f"{p.name}.png")
    return folder


@pytest.mark.slow
def test_grid_end_to_end(tmp_path, photo_files, capsys):
    rc = main(["grid", "--images", str(photo_files), "--targets", "tabby", "481", "--steps", "1",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    for folder in ("pullback_diff", "vanilla_grad_diff"):
        with Image.open(tmp_path / folder / "efficientnet_lite0_alpha_20_steps_1.jpg") as im:
            im.verify()
    assert "pullback_diff" in capsys.readouterr().out


@pytest.mark.slow  # over 2 s
def test_explain_end_to_end(tmp_path, photo_files, capsys):
    out = tmp_path / "e.png"
    rc = main(["explain", str(photo_files / "chelsea.png"), "--target", "espresso", "--steps", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "top-5 before" in text and "towards espresso" in text and "Egyptian cat" in text
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 800


@pytest.mark.slow
def test_grid_with_the_semantic_recipe_has_its_own_files(tmp_path, photo_files, capsys):
    rc = main(["grid", "--images", str(photo_files), "--targets", "tabby", "--steps", "1", "--recipe", "semantic",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "pullback_diff" / "efficientnet_lite0_semantic_alpha_20_steps_1.jpg").is_file()
    assert not (tmp_path / "pullback_diff" / "efficientnet_lite0_alpha_20_steps_1.jpg").exists()


@pytest.mark.slow  # over 2 s
def test_explain_recipe_reaches_the_options(monkeypatch, tmp_path, photo_files, capsys):
    from pullbacks.figures import explain as explain_module

    seen = []
    real = explain_module.explain_image

    def spy(model, image, target, classes, options=None, **kw):
        seen.append(options)
        return real(model, image, target, classes, options.replace(steps=1), **kw)

    monkeypatch.setattr(explain_module, "explain_image", spy)
    assert main(["explain", str(photo_files / "chelsea.png"), "--target", "espresso", "--recipe", "semantic",
                 "--out", str(tmp_path / "e.png")]) == 0
    o = seen[0]
    assert (o.recipe, o.gate, o.pool, o.eps, o.temperature) == ("semantic", "normal_cdf", "detached", None, 1.7)
    assert main(["explain", str(photo_files / "chelsea.png"), "--target", "espresso", "--eps", "none",
                 "--temperature", "0.5", "--out", str(tmp_path / "f.png")]) == 0
    assert (seen[1].recipe, seen[1].eps, seen[1].temperature) == ("excitation", None, 0.5)


@pytest.mark.parametrize("argv,msg", [
    (["grid", "--recipe", "seed"], "--recipe: invalid choice: 'seed'"),
    (["grid", "--model", "resnet5O"], "unknown model"),
    (["grid", "--steps", "0"], "--steps"),
    (["grid", "--temperature", "0"], "--temperature"),
    (["grid", "--temperature", "nan"], "--temperature"),
    (["grid", "--targets", "tabbby"], "did you mean 'tabby'"),
    (["grid", "--targets", "1000"], "out of range"),
    (["grid", "--images", "no/such/file.jpg"], "no/such/file.jpg"),
    (["explain", "no/such/file.jpg", "--target", "1"], "no/such/file.jpg"),
    (["explain", "x.jpg"], "--target"),
    (["frobnicate"], "invalid choice"),
])
def test_wrong_arguments_exit_2_with_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        sys.exit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_module_entry_point_help_and_error():
    ok = subprocess.run([sys.executable, "-m", "pullbacks", "grid", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--temperature" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "pullbacks", "grid", "--alpha", "-2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
