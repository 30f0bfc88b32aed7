"""Models: the registry (``registry.py``), where weights come from (``weights.py``) and
``load_model`` (``load.py``), which wraps a network to take ``[-1, 1]`` images."""

from ..classes import ClassNames, imagenet_classes
from .load import Device, InputSpaceWrapper, LoadedModel, load_model, load_text_model, resolve_device
from .registry import (
    DEFAULT_MODEL,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODELS,
    ModelSpec,
    available_models,
    get_model_spec,
    register_model,
)
from .weights import OFFLINE_MODEL, TIMM_PREFIX, WeightsMismatchError, WeightsUnavailableError

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
    "load_text_model",
    "register_model",
    "resolve_device",
    "DEFAULT_MODEL",
    "OFFLINE_MODEL",
    "TIMM_PREFIX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Device",
]
