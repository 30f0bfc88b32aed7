"""pullbacks.evaluation: each metric on a case computed by hand, the
randomisation check on what it claims to re-initialise, and the library adapters."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("captum")
pytest.importorskip("quantus")

from helpers import assert_unchanged, snapshot, tiny_cnn  # noqa: E402

import pullbacks  # noqa: E402
from pullbacks import AscentOptions  # noqa: E402
from pullbacks import evaluation as E  # noqa: E402
from pullbacks.apps.cli import main  # noqa: E402
from pullbacks.evaluation import captum as C  # noqa: E402
from pullbacks.evaluation import metrics as M  # noqa: E402
from pullbacks.evaluation import quantus as Q  # noqa: E402
from pullbacks.evaluation import randomisation as R  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models here are tiny: thread start-up costs more than it saves on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------- models


class Linear(nn.Module):
    """``logits = relu(W x + 100)``: exactly linear (``W x`` stays far below 100), and its
    one ReLU is so strongly excited that the soft gate ``sigmoid(z / T)`` is 1.0 in float32,
    so the pullback must equal the gradient ``W[target]`` exactly."""

    def __init__(self, weight):
        super().__init__()
        w = torch.as_tensor(weight, dtype=torch.float32)
        self.fc = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(w)
            self.fc.bias.fill_(100.0)
        self.eval()

    def forward(self, x):
        return torch.relu(self.fc(x.flatten(1)))


FAST = E.Settings(
    ascent=AscentOptions(temperature=0.5),
    ig_steps=4,
    smoothgrad_samples=3,
    blocks=3,
    patch=8,
    infidelity_patches=(8,),
    infidelity_draws=2,
    batch_size=8,
)


# ---------------------------------------------------------------------------- methods on a linear model


def test_every_method_on_a_linear_model_matches_the_hand_computed_attribution():
    torch.manual_seed(1)
    w = torch.randn(3, 2 * 4 * 4) * 0.1
    model = Linear(w)
    x = torch.rand(2, 2, 4, 4) - 0.5
    y = torch.tensor([2, 0])
    grad = w[y].view_as(x)
    s = E.Settings(
        ascent=AscentOptions(temperature=0.3, alpha=0.01),
        ig_steps=8,
        smoothgrad_samples=4,
        shap_samples=4,
        smoothgrad_sigma=0.0,
    )  # noiseless: Shap is exactly x * grad here
    expected = {
        "integrated_pullbacks": x * grad,
        "smooth_pullback": grad,
        "gradient_shap": x * grad,
        "pullback_shap": x * grad,
        "pullback": grad,  # soft gates at z ≈ 100 are exactly 1
        "gradient": grad,
        "smoothgrad": grad,  # the gradient of a linear model is the same at every noisy copy
        "input_x_gradient": x * grad,
        "integrated_gradients": x * grad,  # exact for a linear model, baseline 0
        # 5 unclipped steps of 0.01 along the (constant) normalised gradient
        "pullback_ascent": 5 * 0.01 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1),
        "gradient_ascent": 5 * 0.01 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1),
        "guided_backprop": grad,  # Captum's guided backprop rewrites nn.ReLU modules only; this ReLU is functional
    }
    # those need a Conv2d (below), or ignore the model (tests/test_groundtruth.py)
    assert set(expected) | {"guided_gradcam", "guided_pullback_cam", "gradcam", "edge", "random", "centre"} == set(
        E.METHODS
    )
    for method, want in expected.items():
        got = E.attribute(model, x, y, method, s)
        assert got.shape == x.shape, method
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=method)


def test_attribute_chunks_batches_without_changing_results():
    m, x = tiny_cnn(), torch.rand(5, 3, 16, 16) * 2 - 1
    for method in ("pullback", "smoothgrad", "integrated_gradients"):
        whole = E.attribute(m, x, [1, 2, 3, 4, 5], method, E.Settings(batch_size=16, smoothgrad_samples=2, ig_steps=3))
        parts = E.attribute(m, x, [1, 2, 3, 4, 5], method, E.Settings(batch_size=2, smoothgrad_samples=2, ig_steps=3))
        torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-6)  # SmoothGrad's noise too


def test_noisy_methods_draw_fresh_noise_for_every_input_and_target():
    m, x = tiny_cnn(), torch.rand(3, 3, 16, 16) * 2 - 1
    s = E.Settings(smoothgrad_samples=2)
    a = E.attribute(m, x, [1, 1, 2], "smoothgrad", s)
    again = E.attribute(m, x[1:2], [1], "smoothgrad", s)
    torch.testing.assert_close(a[1:2], again)  # the same input and target: the same noise, whatever the batch
    from pullbacks.evaluation.methods import noise_seed

    copies = x[:1] + torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.02
    seeds = {noise_seed(0, c[None], torch.tensor([1])) for c in copies} | {noise_seed(0, x[:1], torch.tensor([1]))}
    assert len(seeds) == 5  # max-sensitivity's noisy copies do not reuse the original's noise
    assert noise_seed(0, x[:1], torch.tensor([1])) != noise_seed(0, x[:1], torch.tensor([2]))  # nor the random class
    assert noise_seed(0, x[:1], torch.tensor([1])) != noise_seed(1, x[:1], torch.tensor([1]))  # the run's seed counts
    other_class = E.attribute(m, x[:1], [2], "smoothgrad", E.Settings(smoothgrad_samples=2, smoothgrad_sigma=0.5))
    plain = E.attribute(m, x[:1], [2], "gradient")
    assert not torch.allclose(other_class, plain, atol=1e-3)


def test_the_same_evaluation_twice_gives_the_same_digits():
    m = tiny_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    s = E.Settings(
        smoothgrad_samples=3,
        patch=8,
        infidelity_patches=(8, 4),
        infidelity_draws=2,
        fe_features=64,
        mc_samples=2,
        ms_samples=2,
        batch_size=8,
    )
    metrics = [
        "random_logit",
        "faithfulness_correlation",
        "infidelity",
        "faithfulness_estimate",
        "monotonicity_correlation",
        "max_sensitivity",
    ]
    runs = [
        E.evaluate(
            m,
            x,
            [1, 2],
            methods=["pullback", "gradient", "smoothgrad"],
            metrics=metrics,
            settings=s,
            names=["a", "b"],
            progress=False,
        )
        for _ in range(2)
    ]
    for column, per_method in runs[0].scores.items():
        for method, v in per_method.items():
            np.testing.assert_array_equal(v, runs[1].scores[column][method], err_msg=f"{column} {method}")


# ---------------------------------------------------------------------------- region perturbation


def test_region_perturbation_hand_computed_curve():
    # one channel 4×4, patch 2: four patches whose contributions w·x are [3, -1, 2, 0.5]
    contrib = {(0, 0): 3.0, (0, 1): -1.0, (1, 0): 2.0, (1, 1): 0.5}
    x = torch.full((1, 1, 4, 4), 0.25)
    w = torch.zeros(1, 1, 4, 4)
    for (i, j), c in contrib.items():
        w[0, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = c / (4 * 0.25)
    model, y = Linear(w.view(1, -1)), torch.tensor([0])
    ixg = x * w  # ranks the patches 3, 2, 0.5, -1
    aopc, curves = Q.region_perturbation(model, x, y, {"ixg": ixg, "neg": -ixg}, patch=2)
    np.testing.assert_allclose(curves["ixg"][0], [3, 5, 5.5, 4.5], atol=1e-4)
    np.testing.assert_allclose(curves["neg"][0], [-1, -0.5, 1.5, 4.5], atol=1e-4)
    assert aopc["ixg"][0] == pytest.approx(4.5, abs=1e-4)
    assert aopc["neg"][0] == pytest.approx(1.125, abs=1e-4)


# ---------------------------------------------------------------------------- randomisation


def test_randomisation_blocks_cover_every_layer_once_top_first():
    m = tiny_cnn()
    blocks = R.randomisation_blocks(m, 3)
    assert blocks[0].modules == ("8",)  # the logit layer alone
    flat = [n for b in reversed(blocks) for n in b.modules]
    assert flat == ["0", "1", "4", "8"]  # every parameterised layer, once, in order
    assert len(R.randomisation_blocks(m, 10)) == 4  # never more blocks than layers


@pytest.mark.parametrize(
    "name, labels",
    [
        ("tf_efficientnet_lite0", ["classifier", "blocks.5–bn2", "blocks.4", "blocks.3", "conv_stem–blocks.2"]),
        ("resnet18", ["fc", "layer4", "layer3", "layer2", "conv1–layer1"]),
    ],
)
def test_randomisation_blocks_cut_at_stage_boundaries(name, labels):
    if name.startswith("tf_"):
        import timm

        net = timm.create_model(name, pretrained=False)
    else:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
    blocks = R.randomisation_blocks(net, 5)
    assert [b.label for b in blocks] == labels
    layers = [n for n, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    assert [n for b in reversed(blocks) for n in b.modules] == layers


def test_randomised_copies_reinitialise_exactly_the_named_blocks_and_leave_the_model_alone():
    m = tiny_cnn()
    with torch.no_grad():  # non-default BatchNorm values, so that a reset is visible
        m[1].running_mean.fill_(0.3)
        m[1].running_var.fill_(2.0)
        m[1].weight.fill_(0.7)
        m[1].bias.fill_(0.2)
    before = snapshot(m)
    rng = torch.get_rng_state()
    original = {k: v.clone() for k, v in m.state_dict().items()}
    blocks = R.randomisation_blocks(m, 3)
    done = set()
    for block, copy in R.randomised_copies(m, blocks, seed=0):
        assert copy is not m
        done.update(block.modules)
        for key, value in copy.state_dict().items():
            layer = key.rsplit(".", 1)[0]
            if key.endswith("num_batches_tracked"):
                continue
            if layer in done:
                assert not torch.equal(value, original[key]), key
            else:
                assert torch.equal(value, original[key]), key
    assert torch.equal(copy[1].running_mean, torch.zeros(6)) and torch.equal(copy[1].running_var, torch.ones(6))
    assert_unchanged(m, before)
    assert torch.equal(torch.get_rng_state(), rng)


def test_randomisation_score_on_a_linear_model_is_the_hand_computed_rank_correlation():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()  # gradient = the weight row
    w = model[1].weight.detach().clone()
    x, y = torch.rand(2, 1, 4, 4) - 0.5, torch.tensor([0, 2])
    r = E.evaluate(
        model,
        x,
        y,
        methods=["gradient"],
        metrics=["randomisation"],
        progress=False,
        settings=E.Settings(blocks=1, seed=7),
    )
    ((_, copy),) = list(R.randomised_copies(model, 1, seed=7))
    new_w = copy[1].weight.detach()
    assert not torch.equal(new_w, w) and torch.equal(model[1].weight, w)
    from scipy.stats import spearmanr

    want = [spearmanr(w[t].abs(), new_w[t].abs())[0] for t in y.tolist()]
    np.testing.assert_allclose(r.scores["randomisation_top"]["gradient"], want, atol=1e-9)
    assert r.stages == ["original", "1"]


# ---------------------------------------------------------------------------- statistics


def test_mean_se_and_bootstrap():
    assert M.mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1 / math.sqrt(3)))
    assert M.mean_se([1.0, float("nan"), 3.0]) == pytest.approx((2.0, 1.0))
    assert M.bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))
    lo, hi = M.bootstrap_ci([0.0, 1.0, 0.0, 1.0])
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    assert M.spearman(np.array([[1, 2, 3, 4]]), np.array([[10, 20, 30, 35]]))[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- Grad-CAM methods


def test_guided_pullback_cam_is_the_pullback_times_the_soft_grad_cam_by_hand():
    m, x, y = tiny_cnn(), torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([1, 4])
    layer = m[4]
    assert C.cam_layer(m) is layer  # the last Conv2d
    before = snapshot(m)
    got = E.attribute(m, x, y, "guided_pullback_cam", FAST)
    assert_unchanged(m, before)
    # by hand: the layer's output A and its pullback dA under the same gates
    seen = {}
    handle = layer.register_forward_hook(lambda mod, i, out: seen.setdefault("A", out))
    try:
        with pullbacks.soft_gates(FAST.ascent.gates):
            logits = m(x.clone().requires_grad_())
        (dA,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), seen["A"])
    finally:
        handle.remove()
    cam = torch.relu((dA.mean((2, 3), keepdim=True) * seen["A"]).sum(1, keepdim=True)).detach()
    want = pullbacks.excitation_pullback(m, x, y, FAST.ascent.gates) * nn.functional.interpolate(cam, size=(16, 16))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert (cam > 0).any() and (cam == 0).any()  # the ReLU of Grad-CAM did something


def test_grad_cam_methods_need_a_convolution():
    with pytest.raises(ValueError, match="no nn.Conv2d; leave those two out of the methods"):
        E.attribute(Linear([[1.0, 2.0, 3.0, 4.0]]), torch.ones(1, 1, 2, 2), [0], "guided_gradcam")


# ---------------------------------------------------------------------------- adapters


def test_captum_adapters_are_captum_attributions_with_the_right_values():
    from captum.attr import GradientAttribution, NoiseTunnel

    m, x = tiny_cnn(), torch.rand(3, 3, 16, 16) * 2 - 1
    pb = C.ExcitationPullback(m, temperature=0.5)
    assert isinstance(pb, GradientAttribution)
    a = pb.attribute(x, target=[1, 2, 3])
    assert isinstance(a, torch.Tensor) and a.shape == x.shape
    torch.testing.assert_close(a, pullbacks.excitation_pullback(m, x, [1, 2, 3], temperature=0.5))
    torch.testing.assert_close(pb.attribute(x, target=4), pullbacks.excitation_pullback(m, x, 4, temperature=0.5))
    predicted = m(x).argmax(1)
    torch.testing.assert_close(pb.attribute(x), pullbacks.excitation_pullback(m, x, predicted, temperature=0.5))
    smooth = NoiseTunnel(pb).attribute(
        x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=torch.tensor([1, 2, 3])
    )
    # SmoothGrad with vanishing noise is the pullback itself (not, say, the vanilla gradient)
    tiny_noise = NoiseTunnel(pb).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=1e-7, target=[1, 2, 3])
    torch.testing.assert_close(tiny_noise, a, rtol=1e-3, atol=1e-6)
    assert smooth.shape == x.shape and not torch.allclose(smooth, a)
    asc = C.Ascent(m, steps=2, temperature=0.5).attribute(x, target=1)
    torch.testing.assert_close(asc, pullbacks.gradient_ascent(m, x, 1, steps=2, temperature=0.5) - x)
    gasc = C.Ascent(m, steps=2, method="gradient").attribute(x, target=1)
    torch.testing.assert_close(gasc, pullbacks.gradient_ascent(m, x, 1, steps=2, method="gradient") - x)
    with pytest.raises(TypeError):
        pb.attribute(x, target=[(1, 2)] * 3)


def test_explain_func_returns_numpy_in_the_shapes_quantus_expects():
    import quantus

    m = tiny_cnn()
    x = (np.random.default_rng(0).random((2, 3, 16, 16)) * 2 - 1).astype(np.float32)
    y = np.array([3, 4])
    a = Q.explain_func(m, x, y, method="pullback", temperature=0.5, device="cpu")
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (2, 1, 16, 16)
    assert Q.explain_func(m, x, y, method="gradient", reduce=None).shape == (2, 3, 16, 16)
    assert (Q.explain_func(m, x, y, method="gradient", reduce="abs") >= 0).all()
    with pytest.raises(TypeError, match="unknown settings"):
        Q.explain_func(m, x, y, temprature=0.5)
    # a Quantus metric that calls explain_func itself (no a_batch given)
    metric = quantus.FaithfulnessEstimate(features_in_step=64, perturb_baseline=0.0, disable_warnings=True)
    scores = metric(
        model=m,
        x_batch=x,
        y_batch=y,
        a_batch=None,
        explain_func=Q.explain_func,
        explain_func_kwargs={"method": "pullback", "temperature": 0.5},
        channel_first=True,
        softmax=False,
        device="cpu",
    )
    assert len(scores) == 2 and all(np.isfinite(scores))


# ---------------------------------------------------------------------------- the whole evaluation


def test_evaluate_leaves_model_and_random_states_untouched_and_writes_the_report(tmp_path):
    m = tiny_cnn()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    before, rng, nprng = snapshot(m), torch.get_rng_state(), np.random.get_state()[1].copy()
    r = E.evaluate(m, x, [1, 2, 3], settings=FAST, progress=False, names=["a", "b", "c"], model_name="tiny")
    assert_unchanged(m, before)
    assert torch.equal(torch.get_rng_state(), rng) and (np.random.get_state()[1] == nprng).all()
    # focus runs on mosaics; the metrics against known evidence need masks
    assert set(r.scores) == {c for m in E.METRICS.values() if m.needs == "images" for c in m.columns}
    for column, per_method in r.scores.items():
        assert set(per_method) == set(E.DEFAULT_METHODS) and all(v.shape == (3,) for v in per_method.values()), column
    assert r.randomisation["pullback"].shape == (3, 4)  # original + 3 blocks
    np.testing.assert_allclose(r.randomisation["pullback"][:, 0], 1.0)
    paths = r.save(tmp_path / "out")
    text = paths["report"].read_text()
    assert "| Excitation pullback |" in text and "Excitation pullback − Vanilla gradient" in text and "±" in text
    import re

    for table in (r.table(), r.differences_table()):  # every row has as many cells as the header
        cells = {len(re.split(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert cells == {len(r.columns) + 3}, table
    assert json.loads(paths["json"].read_text())["methods"] == list(E.DEFAULT_METHODS)
    assert paths["figure"].stat().st_size > 10_000
    # the same seed gives the same numbers
    again = E.evaluate(m, x, [1, 2, 3], settings=FAST, progress=False, metrics=["faithfulness_correlation"])
    np.testing.assert_allclose(
        again.scores["faithfulness_correlation"]["smoothgrad"], r.scores["faithfulness_correlation"]["smoothgrad"]
    )


def test_evaluate_rejects_unknown_names():
    m, x = tiny_cnn(), torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="did you mean 'pullback'"):
        E.evaluate(m, x, 1, methods=["pulback"], progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        E.evaluate(m, x, 1, metrics=["accuracy"], progress=False)


class _Tiny224(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 8, stride=8)
        self.fc = nn.Linear(4, 1000)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def tiny_registered():
    from pullbacks import models

    def build():
        torch.manual_seed(0)
        return _Tiny224()

    spec = models.ModelSpec(
        name="tiny_eval_test",
        build=build,
        default_weights=lambda: build().state_dict(),
        temperature=0.5,
        pool_temperature=0.5,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    models.register_model(spec)
    yield spec.name
    models.MODELS.pop(spec.name, None)


@pytest.mark.slow  # over 2 s
def test_command_line_run_writes_table_and_figure(tmp_path, tiny_registered, capsys):
    args = [
        "evaluate",
        "--model",
        tiny_registered,
        "--out",
        str(tmp_path),
        "--ig-steps",
        "2",
        "--smoothgrad-samples",
        "2",
        "--blocks",
        "2",
        "--no-progress",
        "--methods",
        "pullback,gradient",
        "integrated_gradients",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| Excitation pullback |" in out and "Integrated Gradients" in out
    assert (tmp_path / "evaluation.md").is_file() and (tmp_path / "randomisation.png").is_file()
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["targets"] == [285, 967, 657, 665] and result["settings"]["ascent"]["temperature"] == 0.5
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # an argument error: answered by the parser, before torch is needed
        main(["evaluate", "--model", tiny_registered, "--metrics", "randomization"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "randomisation" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_real_model_smoke(embedded):
    """The one real-model check: the embedded EfficientNet-Lite0 on one photo, cheaply."""
    from pullbacks.images import builtin_photos

    loaded = embedded
    photo = builtin_photos()[1]  # coffee → espresso
    before = snapshot(loaded.model)
    r = E.evaluate(
        loaded.model,
        photo.image[None],
        [photo.label],
        methods=["pullback", "gradient"],
        metrics=["randomisation", "faithfulness_correlation"],
        progress=False,
        settings=E.Settings(ascent=loaded.options(), blocks=2, infidelity_draws=1),
    )
    assert_unchanged(loaded.model, before)
    assert r.stages == ["original", "classifier", "conv_stem–bn2"]
    sims = r.randomisation["pullback"][0]
    assert sims[0] == 1.0 and sims[1] < 0.9 and np.isfinite(r.scores["faithfulness_correlation"]["pullback"]).all()


def test_a_new_method_is_one_entry_of_the_registry(monkeypatch):
    """A method added to ``METHODS`` alone is attributed, reported and paired: twice the gradient
    has the gradient's faithfulness correlation (a Pearson r) and twice its values."""
    from pullbacks.evaluation import methods as Mth

    def twice(model, x, y, s, seed):
        return 2 * Mth.METHODS["gradient"].attribute(model, x, y, s, seed)

    monkeypatch.setitem(
        Mth.METHODS,
        "twice",
        Mth.Method("Twice the gradient", "2 × Saliency", lambda s: 1, twice, pairs_with="gradient"),
    )
    model = tiny_cnn()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    r = E.evaluate(
        model,
        x,
        [1, 2, 3],
        methods=["twice", "gradient"],
        metrics=["faithfulness_correlation"],
        settings=E.Settings(patch=4),
        progress=False,
    )
    fc = r.scores["faithfulness_correlation"]
    np.testing.assert_allclose(fc["twice"], fc["gradient"], rtol=1e-5)
    assert ("twice", "gradient") in r.pairs() and "| Twice the gradient |" in r.table()
    torch.testing.assert_close(
        E.attribute(model, x, [1, 2, 3], "twice"), 2 * E.attribute(model, x, [1, 2, 3], "gradient")
    )


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("ig_steps", -3, "Settings.ig_steps must be an integer >= 1"),
        ("batch_size", 0, "Settings.batch_size"),
        ("patch", "x", "Settings.patch"),
        ("infidelity_patches", (), "infidelity_patches must be a tuple"),
        ("smoothgrad_sigma", -0.1, "smoothgrad_sigma must be a finite number >= 0"),
        ("seed", -1, "Settings.seed"),
        ("mc_softmax", 1, "mc_softmax must be True or False"),
        ("ascent", {"steps": 5}, "AscentOptions"),
        ("baseline", float("nan"), "Settings.baseline must be a finite number"),
    ],
)
def test_settings_are_validated_when_built(field, value, problem):
    with pytest.raises((TypeError, ValueError), match=problem):
        E.Settings(**{field: value})


def test_metrics_are_one_registry_and_focus_asks_for_mosaics():
    assert set(E.COLUMNS) == {c for m in E.METRICS.values() for c in m.columns}
    assert E.EVIDENCE == ("relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game")
    with pytest.raises(ValueError, match="focus runs on 2×2 mosaics.*--mosaics N"):
        E.evaluate(tiny_cnn(), torch.zeros(1, 3, 8, 8), [0], methods=["gradient"], metrics=["focus"], progress=False)


def test_the_captum_adapters_need_captum_alone(monkeypatch):
    """Importable without Quantus (the evaluation's other extra)."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "quantus", None)
    for name in [m for m in sys.modules if m.startswith("pullbacks.evaluation")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module("pullbacks.evaluation.captum")
    assert issubclass(module.ExcitationPullback, module.GradientAttribution)
