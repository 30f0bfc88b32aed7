"""Hugging Face transformers as researchers load them (random-weight tiny configs, nothing
downloaded): forward bit for bit, every nonlinear call gated or reported, and the pullback
equal to a straight-through reference that patches the module classes' forwards (a
different mechanism from the package's global hooks) and ``torch.nn.functional``."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

transformers = pytest.importorskip("transformers", reason="transformers is the optional extra pullbacks[text]")

from helpers import assert_unchanged, snapshot  # noqa: E402
from reference import straight_through  # noqa: E402
from reference_beyond import patched_functional  # noqa: E402

import pullbacks  # noqa: E402
from pullbacks.core.policy import PartialPullbackError  # noqa: E402

transformers.logging.set_verbosity_error()
T = transformers
SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)


def _configs():
    return {
        "llama": (T.LlamaForCausalLM, T.LlamaConfig(vocab_size=50, num_key_value_heads=1, **SMALL), "text"),
        "qwen2": (T.Qwen2ForCausalLM, T.Qwen2Config(vocab_size=50, num_key_value_heads=2, **SMALL), "text"),
        "gemma": (T.GemmaForCausalLM, T.GemmaConfig(vocab_size=50, num_key_value_heads=2, head_dim=8, **SMALL), "text"),
        "t5": (
            T.T5EncoderModel,
            T.T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8),
            "text",
        ),
        "gpt2": (
            T.GPT2LMHeadModel,
            T.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16),
            "text",
        ),
        "bert": (T.BertForSequenceClassification, T.BertConfig(vocab_size=50, **SMALL), "text"),
        "vit": (T.ViTForImageClassification, T.ViTConfig(image_size=32, patch_size=8, **SMALL), "image"),
        "clip": (T.CLIPVisionModel, T.CLIPVisionConfig(image_size=32, patch_size=8, **SMALL), "image"),
        "swin": (
            T.SwinForImageClassification,
            T.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4),
            "image",
        ),
        "convnext": (
            T.ConvNextForImageClassification,
            T.ConvNextConfig(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
            "image",
        ),
    }


# what each model keeps ordinary, by design of the rules (METHOD: tanh is not a gate family)
ORDINARY = {"bert": {"tanh": 1}}


def _build(name, dtype=torch.float64):
    cls, config, kind = _configs()[name]
    torch.manual_seed(0)
    model = cls(config).eval().to(dtype)
    if kind == "text":
        ids = torch.randint(0, 50, (2, 6))
        x = model.get_input_embeddings()(ids).detach()
        return model, x, "inputs_embeds"
    return model, torch.randn(2, 3, 32, 32, dtype=dtype), "pixel_values"


def _first(out):
    return out[0] if isinstance(out, tuple) else (out.logits if hasattr(out, "logits") else out.last_hidden_state)


def _objective(out):
    """A scalar of the output that mixes classes and positions with unequal weights."""
    y = _first(out)
    w = torch.linspace(-1.0, 2.0, y.shape[-1], dtype=y.dtype)
    return (y * w).sum()


# ----------------------------------------------------------------------------- the reference


def _gelu_tanh(u):
    return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))


def _module_forwards(t_gelu):
    """Class -> a straight-through forward written from the formula (value: the class's own forward)."""

    def gated(gate):
        def forward(self, x):
            return straight_through(self._pullbacks_ref_original(x), x * gate(x / t_gelu).detach())

        return forward

    def rms(offset):
        def forward(self, x):
            eps = getattr(self, "variance_epsilon", getattr(self, "eps", None))
            x32 = x.to(torch.float64)
            rms = torch.sqrt((x32.detach() ** 2).sum(-1, keepdim=True) / x.shape[-1] + eps)
            s = (x32 / rms) * (self.weight + offset)
            return straight_through(self._pullbacks_ref_original(x), s.to(x.dtype))

        return forward

    act = T.activations
    return {
        act.NewGELUActivation: gated(_gelu_tanh),
        act.GELUTanh: gated(_gelu_tanh),
        act.QuickGELUActivation: gated(lambda u: torch.sigmoid(1.702 * u)),
        act.GELUActivation: gated(lambda u: 0.5 * (1 + torch.erf(u / math.sqrt(2)))),
        T.models.llama.modeling_llama.LlamaRMSNorm: rms(0.0),
        T.models.qwen2.modeling_qwen2.Qwen2RMSNorm: rms(0.0),
        T.models.gemma.modeling_gemma.GemmaRMSNorm: rms(1.0),
        T.models.t5.modeling_t5.T5LayerNorm: rms(0.0),
    }


@contextmanager
def patched_modules(t_gelu=1.0):
    forwards = _module_forwards(t_gelu)
    saved = {cls: cls.forward for cls in forwards}
    try:
        for cls, forward in forwards.items():
            cls._pullbacks_ref_original = saved[cls]
            cls.forward = forward
        yield
    finally:
        for cls, forward in saved.items():
            cls.forward = forward
            del cls._pullbacks_ref_original


def reference(model, x, key, **options):
    x = x.clone().requires_grad_()
    with patched_functional(**options), patched_modules((options.get("temperatures") or {}).get("gelu", 1.0)):
        out = model(**{key: x})
    (g,) = torch.autograd.grad(_objective(out), x)
    return g


def pullback(model, x, key, **options):
    x = x.clone().requires_grad_()
    with pullbacks.soft_gates(**options) as mode:
        out = model(**{key: x})
    (g,) = torch.autograd.grad(_objective(out), x)
    return g, mode.coverage, _first(out).detach()


# ----------------------------------------------------------------------------- the tests

NAMES = list(_configs())


@pytest.mark.parametrize("name", NAMES)
def test_forward_bit_for_bit_coverage_and_reference(name):
    model, x, key = _build(name)
    before = snapshot(model)
    plain = _first(model(**{key: x})).detach()
    options = dict(temperatures={"gelu": 0.7, "silu": 1.3, "attention": 1.5})
    g, coverage, out = pullback(model, x, key, **options)
    assert torch.equal(out, plain)  # forward bit for bit
    assert dict(coverage.ordinary) == ORDINARY.get(name, {}), str(coverage)
    assert not coverage.unrecognised and coverage.gated["norm"] > 0
    ref = reference(model, x, key, **options)
    assert float((g - ref).norm() / ref.norm()) <= 1e-9
    assert_unchanged(model, before)


def test_module_rules_differ_from_the_vanilla_gradient():
    """The Llama pullback is not the vanilla gradient (the rules did something), and it
    depends on the SiLU temperature."""
    model, x, key = _build("llama")
    v = x.clone().requires_grad_()
    (vanilla,) = torch.autograd.grad(_objective(model(inputs_embeds=v)), v)
    g1, _, _ = pullback(model, x, key)
    g2, _, _ = pullback(model, x, key, temperatures={"silu": 0.5})
    assert float((g1 - vanilla).norm() / vanilla.norm()) > 1e-3
    assert float((g1 - g2).norm() / g1.norm()) > 1e-3


class HandRMS(nn.Module):
    """Llama's RMSNorm under a name no rule knows."""

    def __init__(self, n):
        super().__init__()
        self.weight, self.variance_epsilon = nn.Parameter(torch.rand(n) + 0.5), 1e-6

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


class OddRMSNorm(HandRMS):
    """A class named like an RMSNorm that subtracts the mean: the rule must not recognise it."""

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        return super().forward(x)


class Net(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.a, self.norm, self.b = nn.Linear(8, 8), norm, nn.Linear(8, 3)

    def forward(self, x):
        return self.b(F.relu(self.norm(self.a(x))))


def test_an_unnamed_hand_written_norm_is_reported_not_hidden():
    net = Net(HandRMS(8)).double()
    with pytest.raises(PartialPullbackError, match="rsqrt"):
        with pullbacks.soft_gates(strict=True):
            net(torch.randn(2, 8, dtype=torch.float64, requires_grad=True))


def test_a_named_module_the_rule_does_not_recognise_keeps_its_own_backward():
    net = Net(OddRMSNorm(8)).double()
    x = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    with pullbacks.soft_gates() as mode:
        out = net(x)
    assert "OddRMSNorm (norm module rule" in str(mode.coverage)
    assert mode.coverage.ordinary["rsqrt"] == 1 and "norm" not in mode.coverage.gated
    (g,) = torch.autograd.grad(out.sum(), x)
    with pullbacks.soft_gates(rules=[pullbacks.ModuleRule("norm", (OddRMSNorm,), _held_centred)]) as mode:
        out = net(x)
    assert mode.coverage.gated["norm"] == 1 and not mode.coverage.ordinary
    assert not torch.allclose(torch.autograd.grad(out.sum(), x)[0], g)


def _held_centred(module, x, t):
    c = x - x.mean(-1, keepdim=True)
    return module.weight * c * torch.rsqrt(c.detach().pow(2).mean(-1, keepdim=True) + module.variance_epsilon)


def test_a_users_module_rule_by_class_gates_it_and_matches_the_closed_form():
    """grad_in = grad_out · w / rms, the root mean square held: checked by hand."""
    net = Net(HandRMS(8)).double()
    rule = pullbacks.ModuleRule("norm", (HandRMS,), _held_rms_plain)
    z = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    with pullbacks.soft_gates(rules=[rule], strict=True) as mode:
        y = net.norm(z)
    assert mode.coverage.gated["norm"] == 1 and not mode.coverage.ordinary
    assert torch.equal(y, net.norm(z))
    grad = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, z, grad)
    rms = torch.sqrt((z.detach() ** 2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(g, grad * net.norm.weight.detach() / rms, rtol=1e-12, atol=0)
    with pullbacks.soft_gates(rules=[rule]):
        y = net.norm(z)
    (g_w,) = torch.autograd.grad(y, net.norm.weight, grad)  # the weight keeps its ordinary gradient
    assert torch.allclose(g_w, (grad * z.detach() / rms).sum(0), rtol=1e-12, atol=0)


def _held_rms_plain(module, x, t):
    return module.weight * x * torch.rsqrt(x.detach().pow(2).mean(-1, keepdim=True) + module.variance_epsilon)


def test_module_rules_leave_no_hook_behind_even_after_an_error():
    from torch.nn.modules import module as m

    pre, post = dict(m._global_forward_pre_hooks), dict(m._global_forward_hooks)
    net = Net(HandRMS(8))
    with pytest.raises(ZeroDivisionError):
        with pullbacks.soft_gates():
            net(torch.randn(2, 8, requires_grad=True))
            _ = 1 / 0
    assert dict(m._global_forward_pre_hooks) == pre and dict(m._global_forward_hooks) == post


def test_module_rule_refuses_what_it_cannot_use():
    with pytest.raises(TypeError, match="classes"):
        pullbacks.ModuleRule("norm", (F.relu,), _held_rms_plain)
    with pytest.raises(TypeError, match="run"):
        pullbacks.ModuleRule("norm", ("*Norm",), None)
    with pytest.raises(ValueError, match="family"):
        pullbacks.ModuleRule("not a name", ("X",), _held_rms_plain)


def test_torch_classes_are_never_matched_by_a_name_pattern():
    rule = pullbacks.ModuleRule("norm", ("*RMSNorm", "*LayerNorm"), _held_rms_plain)
    assert not rule.matches(nn.RMSNorm) and not rule.matches(nn.LayerNorm)
    assert rule.matches(T.models.llama.modeling_llama.LlamaRMSNorm)


def test_eager_attention_is_reported_with_the_way_out():
    cls, config, _ = _configs()["vit"]
    config._attn_implementation = "eager"
    model = cls(config).eval()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pullbacks.soft_gates(strict=False) as mode:
            model(pixel_values=torch.randn(1, 3, 32, 32, requires_grad=True))
    assert mode.coverage.ordinary["softmax"] == 2
    assert "attn_implementation='sdpa'" in mode.coverage.describe_ordinary()


# ----------------------------------------------------------------------------- hf/<repo id>


def _saved_vit(folder):
    config = T.ViTConfig(
        image_size=32,
        patch_size=8,
        num_labels=3,
        id2label={0: "ring", 1: "cross", 2: "bar"},
        label2id={"ring": 0, "cross": 1, "bar": 2},
        **SMALL,
    )
    torch.manual_seed(1)
    net = T.ViTForImageClassification(config).eval()
    net.save_pretrained(folder)
    T.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
    ).save_pretrained(folder)
    return net


def test_a_hugging_face_classifier_by_name(tmp_path):
    from pullbacks.models import load_model

    net = _saved_vit(tmp_path)
    loaded = load_model(f"hf/{tmp_path}")
    assert list(loaded.classes) == ["ring", "cross", "bar"]
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    expected = net(
        pixel_values=((x + 1) / 2 - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    ).logits
    torch.testing.assert_close(loaded.model(x), expected)  # the processor's normalisation, folded in
    with pullbacks.soft_gates(strict=True) as mode:
        loaded.model(x.requires_grad_())
    assert {"norm", "attention", "gelu"} <= set(mode.coverage.gated)  # sdpa attention: the rule reaches it
    big = torch.rand(1, 3, 64, 64) * 2 - 1  # another size: resized to the model's own
    assert loaded.model(big).shape == (1, 3)


def test_a_hugging_face_model_not_in_the_cache_says_how_to_get_it(monkeypatch, tmp_path):
    from pullbacks.models import load_model
    from pullbacks.models.weights import WeightsUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="not in the cache") as info:
        load_model("hf/nobody/no-such-vit")
    assert "save_pretrained" in str(info.value) and "hf/" in str(info.value)


def test_without_transformers_the_command_line_names_the_extra(monkeypatch, capsys):
    import sys

    from pullbacks.apps.cli import main

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    image = str(Path(__file__).parent.parent / "media" / "app.png")
    assert main(["explain", image, "--model", "hf/some/vit", "--target", "1"]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[text]"' in err and "Traceback" not in err


@contextmanager
def held_norms_only():
    """Only the norms' rule (statistics held), everything else ordinary: F.layer_norm and the
    RMSNorm classes patched by straight-through forms."""
    import reference_beyond as rb

    saved_ln = F.layer_norm
    forwards = {cls: f for cls, f in _module_forwards(1.0).items() if "RMSNorm" in cls.__name__}
    saved = {cls: cls.forward for cls in forwards}
    try:
        F.layer_norm = rb._layer_norm
        for cls, forward in forwards.items():
            cls._pullbacks_ref_original = saved[cls]
            cls.forward = forward
        yield
    finally:
        F.layer_norm = saved_ln
        for cls, forward in saved.items():
            cls.forward = forward
            del cls._pullbacks_ref_original


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_the_limits_leave_only_the_norms_rule(name):
    """ReLU at T → 0 is the hard gate and attention at T = 1 the ordinary softmax: what is left of
    the pullback is the norms' rule alone (a ReLU variant of each config)."""
    cls, config, _ = _configs()[name]
    config.hidden_act = "relu"
    torch.manual_seed(0)
    model = cls(config).eval().double()
    x = model.get_input_embeddings()(torch.randint(0, 50, (2, 6))).detach()
    g, coverage, _ = pullback(model, x, "inputs_embeds", temperature=1e-6, temperatures={"attention": 1.0})
    assert coverage.gated["relu"] > 0 and coverage.gated["norm"] > 0
    v = x.clone().requires_grad_()
    with held_norms_only():
        (ref,) = torch.autograd.grad(_objective(model(inputs_embeds=v)), v)
    assert float((g - ref).norm() / ref.norm()) <= 1e-9
    (vanilla,) = torch.autograd.grad(_objective(model(inputs_embeds=v)), v)
    assert float((vanilla - ref).norm() / ref.norm()) > 1e-4  # the norms' rule is not the vanilla gradient


def test_the_web_app_explains_with_a_hugging_face_model(tmp_path):
    pytest.importorskip("gradio", reason="the web app is the optional extra pullbacks[app]")
    from pullbacks.apps import web

    _saved_vit(tmp_path / "vit")
    result = web.explain(
        None, "builtin:chelsea", f"hf/{tmp_path / 'vit'}", "cross", steps=1, temperature=1.0, out_dir=tmp_path / "out"
    )
    assert set(result.top5_before) == {"ring", "cross", "bar"} and result.png.is_file()
    assert result.note == ""  # fully gated: no coverage note


def test_a_module_is_checked_once_a_block_and_every_call_is_gated():
    """A module recognised at its first call is not compared again in the same block (one device
    synchronisation per call spared), and every call still gets the rule."""
    from pullbacks.core.rules import module as rules

    net = Net(HandRMS(8)).double()
    checks = []
    real = rules.ModuleRule.apply

    def counted(self, module, x, output, t, check=True):
        checks.append(check)
        return real(self, module, x, output, t, check)

    rule = pullbacks.ModuleRule("norm", (HandRMS,), _held_rms_plain)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rules.ModuleRule, "apply", counted)
        with pullbacks.soft_gates(rules=[rule]) as mode:
            for _ in range(3):
                net.norm(torch.randn(2, 8, dtype=torch.float64, requires_grad=True))
    assert checks == [True, False, False] and mode.coverage.gated["norm"] == 3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["llama", "gemma", "gpt2"])
def test_module_rules_in_half_precision(name, dtype):
    """The modules are recognised in float16/bfloat16 too (the check's tolerance follows the dtype),
    the forward stays bit for bit, and the pullback is the float64 one to the dtype's precision."""
    m64, x64, key = _build(name, torch.float64)
    g64, _, _ = pullback(m64, x64, key)
    model, x, _ = _build(name, dtype)
    plain = _first(model(**{key: x})).detach()
    g, coverage, out = pullback(model, x, key)
    assert torch.equal(out, plain) and not coverage.ordinary and not coverage.unrecognised
    assert float((g.double() - g64).norm() / g64.norm()) < (5e-3 if dtype == torch.float16 else 3e-2)


def test_inside_a_recognised_module_the_mode_gates_nothing():
    """A recognised module's own graph is dropped for the rule's, so from its second call in a
    block on, its inner calls are passed through (the first call runs them as usual: the module
    might not be recognised)."""
    from pullbacks.core.rules.base import GateRule

    act = T.activations.GELUActivation()  # calls F.gelu, which a function rule gates
    inner = []
    real = GateRule.apply

    def counted(self, call, mode):
        inner.append(self.family)
        return real(self, call, mode)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GateRule, "apply", counted)
        with pullbacks.soft_gates() as mode:
            ys = [act(torch.randn(3, 4, dtype=torch.float64, requires_grad=True)) for _ in range(3)]
    assert inner == ["gelu"] and mode.coverage.gated["gelu"] == 3
    assert all("Straight" in type(y.grad_fn).__name__ for y in ys)
