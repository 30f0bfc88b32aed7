"""The model registry: name → how to build it, its weights, its normalisation, its class
names and its recommended temperatures. Adding a model is one :class:`ModelSpec` in
``MODELS`` (or one :func:`register_model` call); any torchvision classification model
and any ``timm/<name>`` work without one.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..classes import ClassNames, imagenet_classes
from ..core.recipes import DEFAULT_RECIPE, recipe_values
from ..core.rules.relu import TEMPERATURE as PAPER_TEMPERATURE
from .weights import (
    OFFLINE_MODEL,
    TIMM_PREFIX,
    StateDict,
    WeightsUnavailableError,
    densenet_fix_keys,
    efficientnet_lite0_state_dict,
    timm_state_dict,
    torchvision_state_dict,
    torchvision_weights,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL = OFFLINE_MODEL


@dataclass(frozen=True)
class ModelSpec:
    """Everything the loader needs to know about one model."""

    name: str
    build: Callable[[], nn.Module]  # the architecture, randomly initialised
    default_weights: Callable[[], StateDict]  # the pretrained state dict, or raise
    temperature: float = PAPER_TEMPERATURE  # recommended ReLU temperature
    pool_temperature: float | None = None  # recommended max-pool temperature (None: the ReLU one, as the demo)
    temperatures: Mapping[str, float] | None = None  # recommended per-family temperatures (None: defaults)
    mean: tuple[float, ...] | None = IMAGENET_MEAN  # None: take timm's pretrained_cfg
    std: tuple[float, ...] | None = IMAGENET_STD
    classes: Callable[[], ClassNames] = imagenet_classes
    by_position: bool = False  # match differently named state dicts by position
    fix_keys: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    recommended: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # recipe -> option values

    def __post_init__(self) -> None:
        if self.pool_temperature is None:
            object.__setattr__(self, "pool_temperature", self.temperature)

    def settings(self, recipe: str = DEFAULT_RECIPE) -> dict[str, Any]:
        """The option values recommended for this model under ``recipe``: for "excitation" its
        ``temperature``/``pool_temperature``/``temperatures``, for another recipe what
        ``recommended[recipe]`` says (nothing: the recipe's own values)."""
        recipe_values(recipe)  # an unknown recipe is an error here too
        out: dict[str, Any] = {}
        if recipe == DEFAULT_RECIPE:
            out = {"temperature": self.temperature, "pool_temperature": self.pool_temperature}
            if self.temperatures:
                out["temperatures"] = dict(self.temperatures)
        return {
            **out,
            **{k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.recommended.get(recipe, {}).items()},
        }


def _tv_builder(fn_name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return tvm.get_model(fn_name, weights=None, **kwargs)

    return build


def _build_efficientnet_lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _tv_spec(name: str, weights_attr: str | None = None, **kw: Any) -> ModelSpec:
    """Any torchvision classification model: its DEFAULT weights (or ``weights_attr``), the
    mean/std of their transforms and the class names of their metadata."""
    import torchvision.models as tvm

    if weights_attr is None:
        default = tvm.get_model_weights(name).DEFAULT
        weights_attr = f"{type(default).__name__}.{default.name}"
    weights = torchvision_weights(weights_attr)
    transforms = weights.transforms()
    return ModelSpec(
        name=name,
        build=_tv_builder(name),
        default_weights=functools.partial(torchvision_state_dict, name, weights_attr),
        mean=tuple(map(float, transforms.mean)),
        std=tuple(map(float, transforms.std)),
        classes=functools.partial(ClassNames, weights.meta["categories"]),
        **kw,
    )


def _timm_classes(build: Callable[[], nn.Module]) -> ClassNames:
    """Class names from timm's own ImageNet metadata (the short name before the first comma)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(build())
    if subset is None:
        return imagenet_classes()
    return ClassNames([d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()])


def _timm_spec(name: str, check: bool = True, **kw: Any) -> ModelSpec:
    """Any timm model, as ``timm/<name>``: normalisation from its pretrained config.
    ``check``: refuse a name timm does not know (imports timm)."""
    if check:
        _check_timm_name(name)

    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return ModelSpec(
        name=TIMM_PREFIX + name,
        build=build,
        default_weights=functools.partial(timm_state_dict, name),
        mean=None,
        std=None,
        classes=functools.partial(_timm_classes, build),
        **kw,
    )


def _check_timm_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}.{hint} timm.list_models() lists them.")


def _hf_spec(name: str) -> ModelSpec:
    """A Hugging Face image classifier, as ``hf/<repo id or folder>`` (``models/hf.py``)."""
    from . import hf

    repo = hf.repo_of(name)
    mean, std = hf.normalisation(repo)
    return ModelSpec(
        name=hf.HF_PREFIX + repo,
        build=functools.partial(hf.build, repo),
        default_weights=functools.partial(hf.state_dict, repo),
        mean=mean,
        std=std,
        classes=functools.partial(hf.classes, repo),
    )


MODELS: dict[str, ModelSpec] = {
    # the authors' ablation values for the follow-up recipe (docs/method.md, "Recipes")
    "resnet50": _tv_spec(
        "resnet50",
        "ResNet50_Weights.IMAGENET1K_V1",
        recommended={"semantic": {"temperature": 0.5, "pool_temperature": 0.5, "steps": 2, "alpha": 5.0}},
    ),
    "vgg11_bn": _tv_spec("vgg11_bn", "VGG11_BN_Weights.IMAGENET1K_V1"),
    "densenet121": _tv_spec("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", fix_keys=densenet_fix_keys),
    "efficientnet_lite0": ModelSpec(
        name="efficientnet_lite0",
        build=_build_efficientnet_lite0,
        default_weights=efficientnet_lite0_state_dict,
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
        # ours, for the follow-up's normal-CDF gate: Φ(u) ≈ σ(1.7 u), so Φ at T = 1.7 is the sigmoid
        # at 1.0 above; the semantic sweep (media/temperature_sweep/efficientnet_lite0_semantic_...)
        # agrees: at the recipe's 0.6 the cells look like the vanilla gradient, outlines show from 1 to 2
        recommended={"semantic": {"temperature": 1.7}},
    ),
    # the authors' later models: GELU, layer norm, attention at their defaults (gelu 1.0, attention 1.5)
    "convnext_tiny": _tv_spec("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),
    "vit_b_16": _tv_spec("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_V1"),
    "timm/pvt_v2_b1": _timm_spec(
        "pvt_v2_b1",
        check=False,
        recommended={"semantic": {"temperatures": {"attention": 1.0, "gelu": 1.0}, "steps": 5, "alpha": 40.0}},
    ),
}


def _committed(load: Callable[[str], dict], family: str) -> dict:
    """A ground-truth network's committed weights; a missing file is a WeightsUnavailableError."""
    try:
        return load(family)
    except FileNotFoundError as e:
        raise WeightsUnavailableError(str(e)) from None


def _groundtruth_specs() -> dict[str, ModelSpec]:
    """The networks trained on the generated task (pullbacks.groundtruth): [-1, 1] inputs as
    trained (mean = std = 0.5), the task's class names, committed weights."""
    from ..groundtruth import weights as gt
    from ..groundtruth.task import CLASSES

    return {
        gt.PREFIX + f: ModelSpec(
            name=gt.PREFIX + f,
            build=functools.partial(gt.build, f),
            default_weights=functools.partial(_committed, gt.state_dict, f),
            temperature=gt.TEMPERATURES[f],
            pool_temperature=gt.TEMPERATURES[f],
            temperatures=gt.family_temperatures(f),
            mean=(0.5,) * 3,
            std=(0.5,) * 3,
            classes=functools.partial(ClassNames, list(CLASSES)),
        )
        for f in gt.FAMILIES
    }


MODELS.update(_groundtruth_specs())


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
        return _timm_spec(text[len(TIMM_PREFIX) :])
    if text.lower().startswith("hf/"):
        return _hf_spec(text)
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if key in known:
        return _tv_spec(key)
    close = difflib.get_close_matches(key, list(dict.fromkeys(list(MODELS) + known)), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}.{hint} Registered models: {', '.join(available_models())}; also any "
        "torchvision classification model (torchvision.models.list_models()), any timm model as "
        "'timm/<name>' and any Hugging Face image classifier as 'hf/<repo id>'."
    )
