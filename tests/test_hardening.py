"""Every way a user can hold it wrong gets a one-line answer with a fix, and the model is
left exactly as it was."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, snapshot, tiny_cnn
from torch import nn

import pullbacks
from pullbacks.apps.cli import main

X = torch.rand(2, 3, 16, 16) * 2 - 1


@pytest.fixture
def model():
    m = tiny_cnn()
    yield m


# --------------------------------------------------------------------------- silently wrong before


def test_inputs_outside_the_clip_range_are_refused(model):
    before = snapshot(model)
    normalised = (X + 1) / 2 / 0.225 - 2  # ImageNet-normalised-like: beyond [-1, 1]
    with pytest.raises(ValueError, match=r"outside clip=\(-1.0, 1.0\).*\[-1, 1\].*clip=None"):
        pullbacks.gradient_ascent(model, normalised, 1)
    assert_unchanged(model, before)
    out = pullbacks.gradient_ascent(model, normalised, 1, clip=None, steps=1, alpha=1.0, eps=None)
    assert (out - normalised).flatten(1).norm(dim=1).sub(1).abs().max() < 1e-5  # only the step moved it


@pytest.mark.parametrize("t", [1e-10, 1e-45, 5e-7])
def test_tiny_temperatures_are_refused_with_the_bound(model, t):
    with pytest.raises(ValueError, match=r"at least 1e-06.*method='gradient'"):
        pullbacks.excitation_pullback(model, X, 1, temperature=t)
    g = pullbacks.excitation_pullback(model, X, 1, temperature=1e-6)
    assert torch.isfinite(g).all()


def test_inference_mode_is_named_with_the_fix(model):
    before = snapshot(model)
    with torch.inference_mode():
        x = X.clone()
        with pytest.raises(RuntimeError, match=r"inference_mode\(\).*outside"):
            pullbacks.excitation_pullback(model, x, 1)
    # a tensor made under inference mode works outside it
    torch.testing.assert_close(pullbacks.excitation_pullback(model, x, 1), pullbacks.excitation_pullback(model, X, 1))
    assert pullbacks.gradient_ascent(model, x, 1, steps=1).shape == X.shape
    assert_unchanged(model, before)


def test_no_gates_error_suggests_a_fix_that_exists():
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)).eval()
    with pytest.raises(ValueError, match="no call that pullbacks gates") as e:
        pullbacks.excitation_pullback(linear, X, 0)
    assert "method='gradient'" in str(e.value) and "gradient_ascent" in str(e.value)
    pullbacks.gradient_ascent(linear, X, 0, method="gradient", steps=1)  # the suggested call works


def test_nested_blocks_are_refused(model):
    with pullbacks.soft_gates():
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with pullbacks.soft_gates(temperature=1.0):
                pass
    with pullbacks.soft_gates() as mode:  # after the refusal, a block works as before
        model(X.clone().requires_grad_())
    assert mode.gated["relu"] == 2 and mode.gated["max_pool"] == 1


# --------------------------------------------------------------------------- opaque errors before


class Wrapped(nn.Module):
    def __init__(self, net, form):
        super().__init__()
        self.net, self.form = net, form

    def forward(self, x):
        y = self.net(x)
        if self.form == "dict":
            return {"logits": y, "features": x}
        if self.form == "attr":
            return type("Output", (), {"logits": y})()
        if self.form == "tuple":
            return (y, x)
        return {"scores": y}


@pytest.mark.parametrize("form", ["dict", "attr", "tuple"])
def test_common_output_forms_give_the_logits(model, form):
    expected = pullbacks.excitation_pullback(model, X, [1, 2])
    torch.testing.assert_close(pullbacks.excitation_pullback(Wrapped(model, form).eval(), X, [1, 2]), expected)


def test_other_outputs_say_what_is_expected(model):
    with pytest.raises(TypeError, match=r"returned a dict.*'logits'"):
        pullbacks.excitation_pullback(Wrapped(model, "other").eval(), X, 1)


def test_numpy_targets_and_temperatures_are_accepted(model):
    expected = pullbacks.excitation_pullback(model, X, [3, 4], temperature=0.5)
    for targets in (np.array([3, 4]), [np.int64(3), np.int64(4)], torch.tensor([3, 4])):
        torch.testing.assert_close(pullbacks.excitation_pullback(model, X, targets, temperature=0.5), expected)
    for t in (np.float32(0.5), torch.tensor(0.5), np.float64(0.5)):
        torch.testing.assert_close(pullbacks.excitation_pullback(model, X, [3, 4], temperature=t), expected)
    single = pullbacks.excitation_pullback(model, X, np.int64(3))
    torch.testing.assert_close(single, pullbacks.excitation_pullback(model, X, 3))
    assert pullbacks.gradient_ascent(model, X, 3, steps=np.int64(1)).shape == X.shape


@pytest.mark.parametrize("targets", ["tabby", ["tabby", 3]])
def test_string_targets_get_the_class_name_hint(model, targets):
    with pytest.raises(TypeError, match=r"classes.index"):
        pullbacks.excitation_pullback(model, X, targets)


def test_unbatched_input_says_add_a_batch_dimension():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match=r"add a batch dimension: x\[None\]"):
        pullbacks.excitation_pullback(mlp, X[0], 1)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        pullbacks.excitation_pullback(mlp, X[0, 0, 0], 1)


def test_data_parallel_of_an_eval_model_is_accepted(model):
    wrapped = nn.DataParallel(model)  # the wrapper's own flag is True; its module is in eval mode
    assert wrapped.training and not model.training
    torch.testing.assert_close(pullbacks.excitation_pullback(wrapped, X, 1), pullbacks.excitation_pullback(model, X, 1))
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        pullbacks.excitation_pullback(wrapped, X, 1)


# --------------------------------------------------------------------------- the command line


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "pullbacks", *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "device,word", [("cuda", "not available"), ("mps", "not available"), ("cdua", "unknown device")]
)
def test_unavailable_or_misspelt_device_is_one_line(device, word, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as e:
        main(["explain", "x.png", "--target", "1", "--device", device])
    err = capsys.readouterr().err
    assert e.value.code == 2 and word in err and "cpu" in err and len(err.strip().splitlines()) == 1


def test_unwritable_output_fails_before_computing(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["grid", "--out", str(blocker / "sub"), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "--out" in err and len(err.strip().splitlines()) == 1


def test_version_and_bare_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and pullbacks.__version__ in capsys.readouterr().out
    assert main([]) == 2
    assert "usage: pullbacks" in capsys.readouterr().err


def test_interrupt_exits_130_with_one_line(monkeypatch, capsys, tmp_path):
    from pullbacks.apps import cli

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load", interrupted)
    assert main(["grid", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "pullbacks grid: interrupted"


def test_cli_hints_name_flags(monkeypatch, capsys):
    from pullbacks import models

    def offline(*_a, **_k):
        raise models.WeightsUnavailableError("no weights for 'resnet50'; pass weights=... or use efficientnet_lite0")

    monkeypatch.setattr(models, "load_model", offline)
    assert main(["grid", "--model", "resnet50", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "--model efficientnet_lite0" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # over 2 s
def test_explain_output_names(tmp_path, capsys):
    from PIL import Image

    for ext in ("webp", "bmp"):
        Image.new("RGB", (48, 36), (200, 30, 30)).save(tmp_path / f"cat.{ext}")
    for ext in ("webp", "bmp"):
        assert (
            main(
                [
                    "explain",
                    str(tmp_path / f"cat.{ext}"),
                    "--target",
                    "1",
                    "--steps",
                    "1",
                    "--out",
                    str(tmp_path / f"res_{ext}"),
                ]
            )
            == 0
        )
        printed = capsys.readouterr().out.strip().splitlines()[-1]
        assert printed == str(tmp_path / f"res_{ext}.png") and (tmp_path / f"res_{ext}.png").is_file()


def test_extreme_aspect_ratio_is_refused(tmp_path):
    from PIL import Image

    from pullbacks.images import ImageLoadError, load_image

    Image.new("RGB", (10000, 1)).save(tmp_path / "line.png")
    with pytest.raises(ImageLoadError, match="Crop it first"):
        load_image(tmp_path / "line.png")


@pytest.mark.slow
def test_cli_errors_have_no_traceback_through_a_subprocess(tmp_path):
    bad = run_cli("grid", "--device", "cuda:7", "--steps", "1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    version = run_cli("--version")
    assert version.returncode == 0 and "pullbacks" in version.stdout
