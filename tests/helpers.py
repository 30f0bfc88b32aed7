"""Test helpers: a snapshot of everything about a model that a call must not change."""

from __future__ import annotations

import torch
from torch import nn

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
)


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "modules": [
            (
                name,
                type(m),
                id(m),
                m.training,
                {h: dict(getattr(m, h, {})) for h in HOOK_DICTS},
                dict(vars(m)).get("inplace"),
            )
            for name, m in model.named_modules(remove_duplicate=False)
        ],
        "params": [
            (name, id(p), p.requires_grad, None if p.grad is None else p.grad.clone())
            for name, p in model.named_parameters()
        ],
        "mode_stack": torch._C._len_torch_function_stack(),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"]
    assert after["mode_stack"] == before["mode_stack"]
    assert [p[:3] for p in after["params"]] == [p[:3] for p in before["params"]]
    for (_, _, _, g0), (name, _, _, g1) in zip(before["params"], after["params"]):
        assert (g0 is None) == (g1 is None), name
        if g0 is not None:
            assert torch.equal(g0, g1), name
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        a, b = before["state"][k], after["state"][k]
        assert a.dtype == b.dtype and a.shape == b.shape, k
        assert torch.equal(a, b) or (
            a.is_floating_point()
            and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
            and torch.equal(a.isnan(), b.isnan())
        ), k


def tiny_cnn(classes: int = 10, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """The shared tiny test model: batch norm, an in-place and a plain ReLU, a max pool,
    adaptive pooling (any input size), in eval mode."""
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(24, classes),
        )
        .to(dtype)
        .eval()
    )


# ----------------------------------------------------------------------------- real architectures


def tv(name: str, **kw):
    """A builder of torchvision's ``name`` with random weights."""

    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kw)

    return build


def timm_model(name: str, **kw):
    """A builder of timm's ``name`` with random weights."""

    def build():
        import timm

        return timm.create_model(name, pretrained=False, **kw)

    return build


def vit_b_16():
    """ViT-B/16 at 32 px with a random head (torchvision zeros it: logits would not depend on x)."""
    model = tv("vit_b_16", image_size=32)()
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


def convnext_tiny():
    """ConvNeXt-T with layer scales of 0.5-1 (1e-6 at init: the blocks would be almost skipped)."""
    model = tv("convnext_tiny")()
    for name, p in model.named_parameters():
        if name.endswith("layer_scale"):
            nn.init.uniform_(p, 0.5, 1.0)
    return model


# ----------------------------------------------------------------------------- fakes


def tiny_loaded(name: str = "tiny", temperature: float = 0.7):
    """A :class:`LoadedModel` around a small ReLU/max-pool CNN with 1000 ImageNet outputs
    (fast on 224×224 photos; no weights read)."""
    from pullbacks.models import InputSpaceWrapper, LoadedModel, ModelSpec, imagenet_classes

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 1000),
    )
    net.requires_grad_(False)
    spec = ModelSpec(name, build=lambda: net, default_weights=dict, temperature=temperature)
    return LoadedModel(InputSpaceWrapper(net, (0.5,) * 3, (0.5,) * 3).eval(), spec, imagenet_classes())


def offline_weights(monkeypatch, name: str = "resnet50", message: str | None = None) -> None:
    """Make ``name``'s pretrained weights unavailable, as on a machine without internet."""
    from pullbacks import models

    def offline(*_a, **_k):
        raise models.WeightsUnavailableError(message or f"Pretrained weights for {name!r} are not available: offline")

    spec = models.MODELS[name]
    monkeypatch.setitem(models.MODELS, name, spec.__class__(**{**spec.__dict__, "default_weights": offline}))
