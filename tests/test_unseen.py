"""What the mode cannot see is reported (custom autograd.Functions, TorchScript, torch.ops,
traced modules, value-dependent masks); ambiguous class names, non-finite results and
inputs the API refuses with a message that names the fix."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, snapshot, tiny_cnn
from torch import nn

import pullbacks
from pullbacks.classes import imagenet_classes
from pullbacks.core.policy import PartialPullbackError, PartialPullbackWarning


class HardReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * (z > 0)


class With(nn.Module):
    """conv → (a gated ReLU) → the part under test → linear."""

    def __init__(self, middle):
        super().__init__()
        self.conv, self.middle, self.head = nn.Conv2d(3, 4, 3), middle, nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.middle(F.relu(self.conv(x))).mean((2, 3)))


class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def _cases():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
        return _built()


def _built():
    return {
        "autograd.Function HardReLU": Lambda(HardReLU.apply),
        "relu (ReluBackward0) run by TorchScript": torch.jit.script(nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())),
        "relu (ReluBackward0) run by TorchScript, torch.ops": Lambda(lambda z: torch.ops.aten.relu(z - 0.1)),
        "relu (ReluBackward0) run by TorchScript, torch.ops or a traced": torch.jit.trace(
            nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()), torch.rand(1, 4, 6, 6)
        ),
        "comparison": Lambda(lambda z: torch.where(z > 0.1, z, 0)),
        "comparison (value-dependent": Lambda(lambda z: z * (z > 0.1)),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_what_the_mode_cannot_see_warns_and_strict_fails(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
        model = With(_cases()[name]).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    before = snapshot(model)
    with pytest.warns(PartialPullbackWarning, match="kept their ordinary gradient") as caught:
        pullbacks.excitation_pullback(model, x, 1)
    warning = [w for w in caught if issubclass(w.category, PartialPullbackWarning)][0]
    assert name in str(warning.message)
    cov = warning.message.coverage
    assert cov.gated["relu"] == 1 and not cov.complete
    with pytest.raises(PartialPullbackError):
        pullbacks.excitation_pullback(model, x, 1, strict=True)
    with pytest.warns(PartialPullbackWarning):  # the ascent too, once
        pullbacks.gradient_ascent(model, x, 1, steps=2)
    assert_unchanged(model, before)


def test_timm_memory_efficient_activations_are_reported():
    from timm.layers.activations_me import HardSwishMe, MishMe, SwishMe

    for act, fn in ((SwishMe(), "SwishAutoFn"), (HardSwishMe(), "HardSwishAutoFn"), (MishMe(), "MishAutoFn")):
        model = With(act).eval()
        with pytest.warns(PartialPullbackWarning, match=f"autograd.Function {fn}"):
            pullbacks.excitation_pullback(model, torch.rand(1, 3, 8, 8), 0)


def test_fully_seen_models_stay_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialPullbackWarning)
        pullbacks.excitation_pullback(tiny_cnn(), torch.rand(2, 3, 8, 8) * 2 - 1, 1)
        pullbacks.excitation_pullback(With(nn.Identity()).eval(), torch.rand(2, 3, 8, 8), 1)


def test_a_model_the_mode_cannot_see_at_all_is_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)))
    with pytest.raises(ValueError, match="no call that pullbacks gates.*relu .ReluBackward0. run by TorchScript"):
        pullbacks.excitation_pullback(scripted.eval(), torch.rand(1, 3, 8, 8), 0)


# --------------------------------------------------------------------------- class names


def test_an_exact_class_name_wins_and_an_ambiguous_one_is_an_error():
    classes = imagenet_classes()
    assert classes.index("cardigan") == 474 and classes.index("Cardigan") == 264
    assert classes.index("Egyptian cat") == classes.index("egyptian cat") == 285
    with pytest.raises(ValueError, match=r"'CARDIGAN' is ambiguous: 'Cardigan' \(264\), 'cardigan' \(474\)"):
        classes.index("CARDIGAN")


def test_front_ends_parse_targets_strictly():
    from pullbacks.apps.service import parse_target

    with pytest.raises(ValueError, match="ambiguous"):
        parse_target("CARDIGAN", imagenet_classes())
    with pytest.raises(ValueError, match="names two classes"):
        parse_target("espresso (281)", imagenet_classes())
    with pytest.raises(ValueError, match="whole ImageNet index"):
        parse_target(281.7, imagenet_classes())
    assert parse_target("espresso (967)", imagenet_classes()) == 967


# --------------------------------------------------------------------------- non-finite


def test_nan_weights_are_an_error_naming_the_logits():
    model = tiny_cnn()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    before = snapshot(model)
    with pytest.raises(ValueError, match="logits are not finite.*NaN parameter"):
        pullbacks.excitation_pullback(model, torch.rand(2, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="logits are not finite"):
        pullbacks.gradient_ascent(model, torch.rand(2, 3, 8, 8) * 2 - 1, 1, method="gradient")
    assert_unchanged(model, before)


def test_an_overflowing_pool_is_an_error_with_the_fix():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(1e4)
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match="NaN or infinite.*raise temperature / pool_temperature"):
        pullbacks.excitation_pullback(model, x, 0, temperature=1e-6, pool_temperature=1e-6, pool="detached")


# --------------------------------------------------------------------------- inputs the API refuses


@pytest.mark.parametrize(
    "targets, error, match",
    [
        ({1, 2}, TypeError, "order is not the samples'"),
        ({0: 1, 1: 2}, TypeError, "give a list"),
        (2**63, ValueError, "out of range"),
        ([1, 2**64], ValueError, "out of range"),
    ],
)
def test_targets_that_cannot_be_meant(targets, error, match):
    with pytest.raises(error, match=match):
        pullbacks.excitation_pullback(tiny_cnn(), torch.rand(2, 3, 8, 8), targets)


def test_empty_batch_meta_and_dtype_mismatch_are_clear():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="no sample"):
        pullbacks.gradient_ascent(model, torch.rand(0, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="'meta' device"):
        pullbacks.excitation_pullback(model, torch.empty(1, 3, 8, 8, device="meta"), 1)
    with pytest.raises(
        TypeError,
        match=r"inputs are torch.float64 but the model's parameters are torch.float32.*"
        r"x.to\(torch.float32\)",
    ):
        pullbacks.excitation_pullback(model, torch.rand(1, 3, 8, 8, dtype=torch.float64), 1)


def test_outputs_that_cannot_give_a_pullback():
    detached = nn.Sequential(tiny_cnn(), Lambda(lambda y: y.detach())).eval()
    with pytest.raises(ValueError, match="do not depend on its input through autograd"):
        pullbacks.excitation_pullback(detached, torch.rand(2, 3, 8, 8), 1)
    first = nn.Sequential(tiny_cnn(), Lambda(lambda y: y[:1])).eval()
    with pytest.raises(ValueError, match="1 rows of logits for 2 inputs"):
        pullbacks.excitation_pullback(first, torch.rand(2, 3, 8, 8), 1)


def test_preprocess_refuses_what_is_not_a_picture():
    import numpy as np

    from pullbacks.images import ImageLoadError, preprocess

    with pytest.raises(TypeError, match="already preprocessed"):
        preprocess(torch.rand(3, 8, 8))
    with pytest.raises(ImageLoadError, match="empty"):
        preprocess(np.zeros((0, 5, 3), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match="NaN"):
        preprocess(np.full((8, 8, 3), np.nan, dtype=np.float32))
    with pytest.raises(ImageLoadError, match=r"channels first.*transpose\(1, 2, 0\)"):
        preprocess(np.zeros((3, 32, 32), dtype=np.float32))


def test_counts_beyond_any_run_are_refused_before_work():
    with pytest.raises(ValueError, match="steps must be at most 1,000,000,000"):
        pullbacks.AscentOptions(steps=99999999999999999999999)


def test_cli_messages_use_flags_not_keywords(monkeypatch):
    """Errors carry their option and a fix per interface; the command line's text comes from those
    fields, so rewording a message cannot break its hint (no front end parses text)."""
    from pullbacks.apps import service
    from pullbacks.models.weights import WeightsUnavailableError, _instead

    e = WeightsUnavailableError("no weights here", _instead("resnet50", "/path/to/r.pth"))
    text = service.message(e, "cli")
    assert "--weights /path/to/r.pth" in text and "--weights random" in text and "weights=" not in text
    assert "load_model('resnet50', weights=\"/path/to/r.pth\")" in str(e)  # Python keeps its keywords
    with pytest.raises(ValueError) as caught:
        pullbacks.AscentOptions(temperature=1e-9)
    assert (caught.value.option, caught.value.value) == ("temperature", 1e-9)
    cli = service.message(caught.value, "cli")
    assert cli.startswith("--temperature must be at least") and "--method gradient" in cli and "method=" not in cli
    with pytest.raises(ValueError) as caught:
        pullbacks.AscentOptions(temperatures={"gelu": -1})
    assert service.message(caught.value, "cli").startswith("--temperatures gelu=T must be a finite number > 0")
    with pytest.raises(TypeError) as caught:
        pullbacks.excitation_pullback(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), torch.zeros(1, 2), "tabby")
    assert "--target tabby" in service.message(caught.value, "cli") and "classes.index" in str(caught.value)
    assert not hasattr(service, "in_cli_terms")


@pytest.mark.slow
def test_cli_huge_steps_and_out_folder(tmp_path, capsys):
    from PIL import Image

    from pullbacks.apps.cli import main
    from pullbacks.images import builtin_photos

    photo = tmp_path / "cat.png"
    Image.fromarray(((builtin_photos()[0].image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(photo)
    with pytest.raises(SystemExit) as e:  # argparse's own exit, one line
        main(["explain", str(photo), "--target", "tabby", "--steps", "99999999999999999999999"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--steps" in err and "at most" in err and "Traceback" not in err
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["explain", str(photo), "--target", "tabby", "--steps", "1", "--out", str(folder)]) == 0
    assert (folder / "cat_png_281_explained.png").is_file() and not (tmp_path / "results.png").exists()


def _photo(tmp_path):
    from PIL import Image

    from pullbacks.images import builtin_photos

    photo = tmp_path / "cat.png"
    Image.fromarray(((builtin_photos()[0].image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(photo)
    return photo


def test_cli_outputs_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    from pullbacks.apps import cli
    from pullbacks.figures import explain as explain_module

    monkeypatch.setattr(explain_module, "explain_image", lambda *a, **k: pytest.fail("computed first"))
    photo = _photo(tmp_path)
    assert cli.main(["explain", str(photo), "--target", "tabby", "--out", str(tmp_path / "x.txt")]) == 2
    assert "give a .png" in capsys.readouterr().err
    locked = tmp_path / "locked.png"
    locked.write_bytes(b"")
    locked.chmod(0o444)
    import os

    if os.access(locked, os.W_OK):  # root can write anyway: nothing to check here
        return
    assert cli.main(["explain", str(photo), "--target", "tabby", "--out", str(locked)]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_cli_evaluate_out_checked_first_and_weights_messages(tmp_path, capsys):
    from pullbacks.apps import cli

    assert cli.main(["evaluate", "--out", "/proc/nope", "--metrics", "infidelity", "--methods", "gradient"]) == 2
    err = capsys.readouterr().err
    assert "cannot write into '/proc/nope'" in err and "--out" in err
    whole = tmp_path / "model.pt"
    torch.save(tiny_cnn(), whole)
    assert cli.main(["explain", str(_photo(tmp_path)), "--target", "1", "--weights", str(whole)]) == 2
    err = capsys.readouterr().err
    assert "pickled Python objects" in err and "state_dict" in err and "\x1b[" not in err and err.count("\n") == 1


def test_an_image_too_thin_names_its_file(tmp_path):
    from PIL import Image

    from pullbacks.images import ImageLoadError, load_image

    thin = tmp_path / "thin.png"
    Image.new("RGB", (30, 1)).save(thin)
    with pytest.raises(ImageLoadError, match=r"cannot load image .*thin.png.*30×1 pixels"):
        load_image(thin)


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    import builtins
    import sys as _sys

    from pullbacks.apps import entry

    real = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "cli" or name.endswith("apps.cli"):
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.delitem(_sys.modules, "pullbacks.apps.cli", raising=False)
    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert entry.main(["grid"]) == 130
    assert capsys.readouterr().err == "pullbacks: interrupted\n"


def test_importing_the_package_does_not_load_torch():
    import subprocess as sp
    import sys

    code = "import sys, pullbacks, pullbacks.apps.entry; print('torch' in sys.modules)"
    assert sp.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_quantized_model_is_refused_with_the_way_out():
    m = torch.nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(TypeError, match="model is quantized .*explain the floating-point model"):
        pullbacks.excitation_pullback(q, torch.randn(2, 8), 1)
    unused = nn.Sequential(Lambda(lambda x: torch.zeros(x.shape[0], 4, requires_grad=True) + 0 * x.sum().detach()))
    with pytest.raises(ValueError, match="do not depend on its input"):  # logits on the graph, but not from x
        pullbacks.excitation_pullback(nn.Sequential(nn.ReLU(), unused).eval(), torch.rand(1, 3, 8, 8), 0)


_HAND_WRITTEN = {  # what Hugging Face and research code write out by hand, and what the report must name
    "Llama/Qwen2 RMSNorm": (lambda z: z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6), {"pow", "rsqrt"}),
    "T5 layer norm": (
        lambda z: z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6),
        {"pow", "sqrt", "division by a tensor"},
    ),
    "layer norm with var": (
        lambda z: (z - z.mean(-1, keepdim=True)) / (z.var(-1, keepdim=True) + 1e-5) ** 0.5,
        {"var/std", "pow", "division by a tensor"},
    ),
    "GPT-2 tanh GELU": (
        lambda z: 0.5 * z * (1 + torch.tanh(0.7978845608 * (z + 0.044715 * torch.pow(z, 3.0)))),
        {"tanh", "pow"},
    ),
    "softmax by hand": (lambda z: z.exp() / z.exp().sum(-1, keepdim=True), {"exp", "division by a tensor"}),
    "reciprocal": (lambda z: z * (1 + z.abs()).reciprocal(), {"reciprocal", "abs"}),
}


@pytest.mark.parametrize("name", list(_HAND_WRITTEN))
def test_a_hand_written_norm_or_gelu_is_reported_never_called_complete(name):
    f, expected = _HAND_WRITTEN[name]
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), Lambda(f), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    with pytest.warns(PartialPullbackWarning, match="kept their ordinary gradient") as caught:
        pullbacks.excitation_pullback(model, x, 0)
    coverage = caught[0].message.coverage
    assert set(coverage.ordinary) == expected and not coverage.complete, coverage
    with pytest.raises(PartialPullbackError):
        pullbacks.excitation_pullback(model, x, 0, strict=True)


def test_linear_arithmetic_is_not_reported():
    scale = torch.full((8,), 2.0)  # a constant tensor: dividing by it is linear
    model = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), Lambda(lambda z: (z / 2).pow(1) * z.pow(0) / scale + 2**1), nn.Linear(8, 2)
    ).eval()
    with pullbacks.soft_gates(strict=True) as mode:
        model(torch.randn(3, 4, requires_grad=True))
    assert mode.coverage.complete and mode.coverage.gated == {"relu": 1}


class _Opaque(nn.Module):
    def forward(self, x):
        return HardReLU.apply(x)


def test_a_remembered_graph_walk_is_redone_when_the_model_changes():
    """The walk is remembered per model (it costs milliseconds of Python per step); swapping in
    a module whose backward the gates cannot see changes the model's structure, so the next
    pullback walks again and reports it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pullbacks.excitation_pullback(net, x, 1)
        pullbacks.excitation_pullback(net, x, 1)  # remembered: still clean
    net[3] = _Opaque()
    with pytest.warns(PartialPullbackWarning, match="HardReLU"):
        pullbacks.excitation_pullback(net, x, 1)
