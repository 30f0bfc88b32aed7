"""Tests for pullbacks.models: registry, wrapper, weights loading, class names (offline)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision.transforms.functional as TF

from pullbacks import models
from pullbacks.images import builtin_photos
from pullbacks.models import (
    ClassNames,
    WeightsMismatchError,
    WeightsUnavailableError,
    imagenet_classes,
    load_model,
    resolve_device,
    weights,
)

TORCHVISION_MODELS = ["resnet50", "vgg11_bn", "densenet121"]


@pytest.fixture(scope="module")
def lite0(embedded):
    return embedded


@pytest.fixture(scope="module")
def photos():
    # real photos as inputs: random noise through these nets is slow on CPU (denormals)
    return builtin_photos()


# --------------------------------------------------------------------------- real weights


@pytest.mark.slow
def test_efficientnet_lite0_classifies_builtin_photos(lite0, photos):
    x = torch.stack([p.image for p in photos])
    assert x.shape == (4, 3, 224, 224)
    with torch.no_grad():
        top5 = lite0.model(x).topk(5, dim=1).indices
    for photo, row in zip(photos, top5.tolist()):
        assert photo.label in row, (photo.name, [lite0.classes[i] for i in row])


def test_efficientnet_lite0_is_identity_wrapped_per_timm_cfg(lite0, photos):
    cfg = lite0.model.net.pretrained_cfg
    assert tuple(cfg["mean"]) == (0.5, 0.5, 0.5) and tuple(cfg["std"]) == (0.5, 0.5, 0.5)
    assert lite0.model.identity
    x = photos[1].image[None, :, 64:128, 64:128]
    with torch.no_grad():
        assert torch.equal(lite0.model(x), lite0.model.net(x))


def test_loaded_model_is_eval_frozen_and_described(lite0, photos):
    assert not any(m.training for m in lite0.model.modules())
    assert not any(p.requires_grad for p in lite0.model.parameters())
    assert lite0.name == "efficientnet_lite0"
    assert lite0.temperature == 1.0 and lite0.pool_temperature > 0
    assert len(lite0.classes) == 1000 and lite0.device == torch.device("cpu")
    # input gradients still flow through frozen weights
    x = photos[0].image[None, :, 64:128, 64:128].clone().requires_grad_(True)
    lite0.model(x)[0, 0].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- wrapper, registry


def test_wrapper_normalises_torchvision_input(photos):
    loaded = load_model("resnet50", weights=None, seed=0)
    assert not loaded.model.identity
    assert loaded.temperature == 0.3 and loaded.pool_temperature == 0.3
    x = torch.stack([p.image[:, ::2, ::2] for p in photos[:2]])  # 2×3×112×112
    expected_in = TF.normalize((x + 1) / 2, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    with torch.no_grad():
        got = loaded.model(x)
        want = loaded.model.net(expected_in)
        unnormalised = loaded.model.net(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, unnormalised, atol=1e-3)


def test_seed_makes_random_weights_reproducible_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("efficientnet_lite0", weights=None, seed=1).model.state_dict()
    after = torch.rand(3)
    assert torch.equal(before, after)
    b = load_model("efficientnet_lite0", weights=None, seed=1).model.state_dict()
    c = load_model("efficientnet_lite0", weights=None, seed=2).model.state_dict()
    key = "net.conv_stem.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_unknown_model_name_suggests_and_lists():
    with pytest.raises(ValueError) as err:
        load_model("resnet5", weights=None)
    msg = str(err.value)
    assert "Did you mean 'resnet50'" in msg
    for name in ["densenet121", "efficientnet_lite0", "resnet50", "vgg11_bn"]:
        assert name in msg
    assert models.get_model_spec("ResNet-50".replace("-", "")).name == "resnet50"


def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # named devices pass through


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device(" AUTO ") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


# --------------------------------------------------------------------------- weights files


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty torch.hub cache and a network that always fails."""
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints", calls


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_missing_weights_give_helpful_error(name, offline_hub):
    cache, calls = offline_hub
    with pytest.raises(WeightsUnavailableError) as err:
        load_model(name)
    msg = str(err.value)
    assert len(calls) == 1  # it really tried to download
    file_name = calls[0].rsplit("/", 1)[-1]
    assert file_name.endswith(".pth")
    for part in (repr(name), str(cache), file_name, "efficientnet_lite0", "weights="):
        assert part in msg, part
    assert isinstance(err.value.__cause__, urllib.error.URLError)
    assert isinstance(err.value, RuntimeError)


@pytest.mark.slow
def test_cached_weights_are_used_without_network(offline_hub):
    cache, calls = offline_hub
    net = load_model("densenet121", weights=None, seed=3).model.net
    sd = {_legacy_densenet_key(k): v for k, v in net.state_dict().items()}
    cache.mkdir(parents=True)
    file_name = weights._weights_file_name(__import__("torchvision").models.DenseNet121_Weights.IMAGENET1K_V1.url)
    torch.save(sd, cache / file_name)
    loaded = load_model("densenet121")  # "default": found in the cache
    assert calls == []
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.model.net.state_dict()[k], v), k


def test_corrupt_cached_file_is_reported(offline_hub):
    cache, _ = offline_hub
    cache.mkdir(parents=True)
    url = __import__("torchvision").models.ResNet50_Weights.IMAGENET1K_V1.url
    (cache / weights._weights_file_name(url)).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="could not be read"):
        load_model("resnet50")


def _legacy_densenet_key(key: str) -> str:
    # torchvision's published DenseNet files spell norm1 as "norm.1", conv2 as "conv.2", ...
    for part in ("norm", "relu", "conv"):
        for i in ("1", "2"):
            key = key.replace(f".{part}{i}.", f".{part}.{i}.")
    return key


@pytest.mark.slow  # over 2 s
def test_load_from_explicit_path(tmp_path):
    net = load_model("densenet121", weights=None, seed=5).model.net
    path = tmp_path / "densenet.pth"
    legacy = {_legacy_densenet_key(k): v for k, v in net.state_dict().items()}
    assert any(".norm.1." in k for k in legacy)  # the remapping is really exercised
    torch.save(legacy, path)
    loaded = load_model("densenet121", weights=path)
    assert loaded.weights == str(path)
    other = load_model("densenet121", weights=None, seed=6).model.net.state_dict()
    state = loaded.model.net.state_dict()
    assert not torch.equal(other["features.conv0.weight"], state["features.conv0.weight"])
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v), k


def test_explicit_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model("resnet50", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(WeightsMismatchError, match="do not fit 'resnet50'"):
        load_model("resnet50", weights=bad)


def test_load_by_position_checks_every_shape(tmp_path):
    net = load_model("efficientnet_lite0", weights=None, seed=0).model.net
    tensors = list(net.state_dict().values())
    renamed = {f"t{i:03d}": v.clone() for i, v in enumerate(tensors)}
    good = tmp_path / "good.pth"
    torch.save(renamed, good)
    loaded = load_model("efficientnet_lite0", weights=good).model.net.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(loaded.values(), tensors))

    renamed["t005"] = torch.zeros(7, 7)
    bad = tmp_path / "bad.pth"
    torch.save(renamed, bad)
    with pytest.raises(WeightsMismatchError) as err:
        load_model("efficientnet_lite0", weights=bad)
    msg = str(err.value)
    assert "#5" in msg and "'t005'" in msg and "(7, 7)" in msg
    assert list(net.state_dict())[5] in msg

    del renamed["t005"]
    torch.save(renamed, bad)
    with pytest.raises(WeightsMismatchError, match="295 tensors but"):
        load_model("efficientnet_lite0", weights=bad)


# --------------------------------------------------------------------------- class names


def test_class_names_from_torchvision_meta():
    names = imagenet_classes()
    assert isinstance(names, ClassNames) and len(names) == 1000
    assert names[0] == "tench" and names[482] == "cassette player" and names[-1] == "toilet tissue"
    assert names[1:3] == ["goldfish", "great white shark"]


def test_class_names_index():
    names = imagenet_classes()
    assert names.index(482) == 482
    assert names.index("482") == 482
    assert names.index(" 0 ") == 0
    assert names.index("Cassette Player") == 482
    assert names.index("tench") == 0
    assert names.index("GOLF  BALL") == 574


def test_class_names_errors():
    names = imagenet_classes()
    with pytest.raises(ValueError, match=r"did you mean 'cassette player'"):
        names.index("casette player")
    with pytest.raises(ValueError, match="0 to 999"):
        names.index(1000)
    with pytest.raises(ValueError, match="0 to 999"):
        names.index("-1")
    with pytest.raises(ValueError, match="unknown class name"):
        names.index("qwxzzy")
    with pytest.raises(TypeError):
        names.index(True)


def test_custom_class_names():
    names = ClassNames(["cat", "dog"])
    assert names.index("DOG") == 1 and list(names) == ["cat", "dog"]
    with pytest.raises(ValueError, match="0 to 1"):
        names.index(2)


# --------------------------------------------------------------------------- any torchvision / timm model


def test_any_torchvision_model_takes_its_weights_metadata():
    import torchvision.models as tvm

    spec = models.get_model_spec("regnet_y_400mf")
    weights = tvm.RegNet_Y_400MF_Weights.DEFAULT
    assert spec.mean == tuple(weights.transforms().mean) and spec.std == tuple(weights.transforms().std)
    assert list(spec.classes()) == weights.meta["categories"]
    loaded = load_model("regnet_y_400mf", weights="random", seed=0)
    assert type(loaded.model.net).__name__ == "RegNet" and not loaded.model.training
    assert torch.allclose(loaded.model.mean.flatten(), torch.tensor(weights.transforms().mean))


@pytest.mark.slow  # over 2 s
def test_registry_has_the_authors_later_models_with_family_defaults():
    for name in ("convnext_tiny", "vit_b_16", "timm/pvt_v2_b1"):
        assert name in models.available_models()
    o = load_model("timm/pvt_v2_b1", weights="random", seed=0).options()
    assert o.temperatures["gelu"] == 1.0 and o.temperatures["attention"] == 1.5


@pytest.mark.slow  # over 2 s
def test_timm_model_by_prefix_with_its_config_and_class_names():
    loaded = load_model("timm/vit_tiny_patch16_224", weights="random", seed=0)
    assert loaded.name == "timm/vit_tiny_patch16_224"
    assert loaded.model.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # from timm's pretrained config
    assert loaded.classes[0] == "tench" and loaded.classes[281] == "tabby" and len(loaded.classes) == 1000


def test_unknown_names_get_suggestions():
    with pytest.raises(ValueError, match="'timm/pvt_v2_b1'"):
        models.get_model_spec("timm/pvt_v2_b11")
    with pytest.raises(ValueError, match="any timm model as 'timm/<name>'"):
        models.get_model_spec("not_a_model")


def test_timm_weights_offline_fail_fast_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(WeightsUnavailableError, match="cannot be reached") as e:
        load_model("timm/pvt_v2_b1")
    from pullbacks.apps.service import message

    assert "weights=" in str(e.value) and str(tmp_path) in str(e.value)
    cli = message(e.value, "cli")
    assert "--weights /path/to/state_dict.pth" in cli and "weights=" not in cli and str(tmp_path) in cli


def test_timm_weights_from_the_cache(monkeypatch, tmp_path):
    """A state dict in the Hugging Face cache layout loads without the network."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    net = timm.create_model("vit_tiny_patch16_224")
    snapshot = tmp_path / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(snapshot / "model.safetensors"))
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "_hub_reachable", lambda *a, **k: pytest.fail("went to the network"))
    loaded = load_model("timm/vit_tiny_patch16_224")
    for (k, v), w in zip(net.state_dict().items(), loaded.model.net.state_dict().values()):
        assert torch.equal(v, w), k
