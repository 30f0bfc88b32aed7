"""``load_model(name)``: an eval-mode network that takes images in ``[-1, 1]`` and applies
the model's own normalisation inside (docs/method.md, "Input space"), with its ImageNet
class names and recommended temperatures.

Parameters of the models loaded here get ``requires_grad_(False)``: explanations need
the gradient with respect to the input only, and frozen weights spare autograd the
weight-gradient work. Models that users bring themselves are never changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..classes import ClassNames
from ..core.options import AscentOptions, build
from ..core.options import given as given_options
from ..core.recipes import DEFAULT_RECIPE
from .registry import ModelSpec, get_model_spec
from .weights import StateDict, load_weights, read_state_dict_file

Device = str | torch.device | None


class InputSpaceWrapper(nn.Module):
    """Takes images in ``[-1, 1]`` and feeds ``normalize((x + 1) / 2, mean, std)`` to ``net``.

    When mean and std are both 0.5 that normalisation is the identity and is skipped.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.identity = all(m == 0.5 for m in mean) and all(s == 0.5 for s in std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.identity:
            return self.net(x)
        mean, std = cast(Tensor, self.mean), cast(Tensor, self.std)  # buffers
        return self.net(((x + 1) / 2 - mean) / std)


def resolve_device(device: Device = None) -> torch.device:
    """``None`` → cpu; ``"auto"`` → cuda, else mps, else cpu; anything else as given."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@dataclass
class LoadedModel:
    """A wrapped model (takes ``[-1, 1]`` images, eval mode) and what goes with it: its
    ``spec`` (name, recommended settings: ``spec.settings(recipe)``), class names, device and
    the weights loaded."""

    model: InputSpaceWrapper
    spec: ModelSpec
    classes: ClassNames
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights: str = "default"  # "default", "random" or the path loaded

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def temperature(self) -> float:
        """The recommended ReLU temperature (the spec's)."""
        return self.spec.temperature

    @property
    def pool_temperature(self) -> float | None:
        """The recommended max-pool temperature (the spec's)."""
        return self.spec.pool_temperature

    def options(self, options: AscentOptions | None = None, **overrides: Any) -> AscentOptions:
        """Ascent options for this model: ``options`` (default: the model's recommended
        settings under ``recipe``, then the recipe's) with ``overrides``. A ``temperature``,
        ``FROM_RECIPE``, or None where None means nothing else (:func:`~pullbacks.core.options.given`),
        is "not given"; a given ``temperature`` with no ``pool_temperature`` drops the model's
        pool recommendation (under "excitation" the pool then follows ``temperature``, like
        the authors' demo)."""
        given = given_options(overrides)
        if options is None:
            recommended = self.spec.settings(given.get("recipe", DEFAULT_RECIPE))
            if "temperature" in given and "pool_temperature" not in given:
                recommended.pop("pool_temperature", None)
            if "temperatures" in given and "temperatures" in recommended:
                given["temperatures"] = {**recommended["temperatures"], **given["temperatures"]}
            given = {**recommended, **given}
        return build(AscentOptions, options, given)


def _normalisation(spec: ModelSpec, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if spec.mean is not None and spec.std is not None:
        return spec.mean, spec.std
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if "mean" not in cfg or "std" not in cfg:
        raise ValueError(f"{spec.name!r}: no mean/std in the spec nor in the model's pretrained_cfg")
    return tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"]))


def load_model(
    name: str,
    *,
    weights: str | os.PathLike | None = "default",
    device: Device = None,
    seed: int | None = None,
) -> LoadedModel:
    """Load a model, wrapped to take ``[-1, 1]`` images, in eval mode: a registered name
    (:func:`available_models`), any torchvision classification model name (its DEFAULT
    weights, normalisation and class names), ``"timm/<name>"`` for a timm model or
    ``"hf/<repo id>"`` for a Hugging Face image classifier (``pullbacks[text]``).

    ``weights``: ``"default"`` the pretrained weights, ``"random"`` (or ``None``) random
    initialisation (tests, benchmarks; ``seed`` makes it reproducible without touching the global RNG),
    or a path to a state_dict file. ``device``: see :func:`resolve_device`.
    """
    spec = get_model_spec(name)
    dev = resolve_device(device)
    state_dict: StateDict | None = None
    if weights is None or (isinstance(weights, str) and weights == "random"):
        source = "random"
    elif isinstance(weights, str) and weights == "default":
        source = "default"
        state_dict = spec.default_weights()  # fails fast, before building the network
    else:
        path = Path(os.fspath(weights)).expanduser()
        source = str(path)
        state_dict = read_state_dict_file(path, spec.name)

    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = spec.build()
    else:
        net = spec.build()
    if state_dict is not None:
        what = "the default weights" if source == "default" else source
        load_weights(net, state_dict, spec, what)
    mean, std = _normalisation(spec, net)
    net.requires_grad_(False)  # only input gradients are ever needed (module docstring)
    model = InputSpaceWrapper(net, mean, std).to(dev).eval()
    return LoadedModel(model=model, spec=spec, classes=spec.classes(), device=dev, weights=source)


def load_text_model(name: str, *, device: Device = None) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a Hugging Face text model, ``"hf/<repo id>"`` (from the local cache)
    or ``"hf/<folder>"`` (saved with ``save_pretrained``): a sequence classifier or a causal LM, eval
    mode, parameters frozen, attention through ``scaled_dot_product_attention`` (``pullbacks[text]``)."""
    from . import hf

    model, tokenizer = hf.text_model(hf.repo_of(name))
    model.requires_grad_(False)
    return model.to(resolve_device(device)).eval(), tokenizer
