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
    rc = main(
        [
            "grid",
            "--images",
            str(photo_files),
            "--targets",
            "tabby",
            "481",
            "--steps",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
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
    rc = main(
        [
            "grid",
            "--images",
            str(photo_files),
            "--targets",
            "tabby",
            "--steps",
            "1",
            "--recipe",
            "semantic",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
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
        return real(model, image, target, classes, options=options.replace(steps=1), **kw)

    monkeypatch.setattr(explain_module, "explain_image", spy)
    assert (
        main(
            [
                "explain",
                str(photo_files / "chelsea.png"),
                "--target",
                "espresso",
                "--recipe",
                "semantic",
                "--out",
                str(tmp_path / "e.png"),
            ]
        )
        == 0
    )
    o = seen[0]
    assert (o.recipe, o.gate, o.pool, o.eps, o.temperature) == ("semantic", "normal_cdf", "detached", None, 1.7)
    assert (
        main(
            [
                "explain",
                str(photo_files / "chelsea.png"),
                "--target",
                "espresso",
                "--eps",
                "none",
                "--temperature",
                "0.5",
                "--out",
                str(tmp_path / "f.png"),
            ]
        )
        == 0
    )
    assert (seen[1].recipe, seen[1].eps, seen[1].temperature) == ("excitation", None, 0.5)


@pytest.mark.parametrize(
    "argv,msg",
    [
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
    ],
)
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


def test_every_option_has_a_flag_on_every_command_and_reaches_the_options(tmp_path, monkeypatch, capsys):
    """A field added to AscentOptions without a declaration in options.FIELDS fails here, and so
    does a command that drops one (but for the omissions each command declares)."""
    import dataclasses

    from pullbacks.apps import arguments
    from pullbacks.apps.cli import GRID_OMITS, build_parser
    from pullbacks.apps.parser import EVALUATE_OMITS
    from pullbacks.core.options import FIELDS, AscentOptions

    assert list(FIELDS) == [f.name for f in dataclasses.fields(AscentOptions)]
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command, omits in (("grid", GRID_OMITS), ("explain", ()), ("evaluate", EVALUATE_OMITS)):
        dests = {a.dest for a in commands[command]._actions}
        assert set(FIELDS) - set(omits) <= dests, (command, set(FIELDS) - set(omits) - dests)
    (tmp_path / "myrules.py").write_text(
        "import torch, torch.nn.functional as F, pullbacks\n"
        "ELU = pullbacks.GateRule('elu', (F.elu,), lambda z, t: torch.sigmoid(z / t), 0.5)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = parser.parse_args(
        [
            "explain",
            "x.png",
            "--target",
            "1",
            "--temperature",
            "0.7",
            "--pool-temperature",
            "2",
            "--gate",
            "normal_cdf",
            "--pool",
            "detached",
            "--temperatures",
            "gelu=0.5",
            "--recipe",
            "semantic",
            "--variants",
            "sdpa=held",
            "--rules",
            "myrules:ELU",
            "--strict",
            "--no-replay",
            "--steps",
            "3",
            "--alpha",
            "7",
            "--eps",
            "none",
            "--clip=-2,2",
            "--method",
            "gradient",
        ]
    )
    o = AscentOptions(**arguments.given(args))
    assert (o.temperature, o.pool_temperature, o.gate, o.pool, o.temperatures["gelu"], o.recipe) == (
        0.7,
        2.0,
        "normal_cdf",
        "detached",
        0.5,
        "semantic",
    )
    assert (o.variants["sdpa"], o.rules[0].family, o.strict, o.replay, o.steps, o.alpha, o.eps, o.clip, o.method) == (
        "held",
        "elu",
        True,
        False,
        3,
        7.0,
        None,
        (-2.0, 2.0),
        "gradient",
    )
    assert arguments.given(parser.parse_args(["explain", "x.png", "--target", "1"])) == {}  # nothing given
    for bad, problem in (
        (["--variants", "sdpa=loud"], "variants"),
        (["--rules", "myrules:NOPE"], "has no 'NOPE'"),
        (["--clip", "none,1"], "clip"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(["explain", "x.png", "--target", "1", *bad])
        err = capsys.readouterr().err
        assert problem in err and "Traceback" not in err, err
