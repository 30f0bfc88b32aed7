"""Hugging Face image classifiers by name: ``load_model("hf/<repo id>")`` (or ``"hf/<folder>"``
for a model saved with ``save_pretrained``).

``AutoModelForImageClassification`` with the attention computed by
``scaled_dot_product_attention`` (so the attention rule reaches it), its image processor's
mean and std folded into the ``[-1, 1]`` input wrapper, its ``id2label`` as class names.
Weights come from the local Hugging Face cache; a repo that is not there is downloaded only
when the hub can be reached (the user named it), otherwise the error says how to get it.
``transformers`` is the optional extra ``pullbacks[text]``, imported here only.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..classes import ClassNames
from ..core.errors import MissingExtraError
from .weights import HUB_HOST, OFFLINE_MODEL, WeightsUnavailableError, _hub_reachable

HF_PREFIX = "hf/"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise MissingExtraError("Hugging Face models", "text", "transformers") from e
    transformers.logging.set_verbosity_error()
    return transformers


class HFImageClassifier(nn.Module):
    """``hf(pixel_values=x).logits``, the images resized to the size the model was trained at
    (bilinear, part of the model's preprocessing) when they come in another."""

    def __init__(self, net: nn.Module, size: tuple[int, int] | None) -> None:
        super().__init__()
        self.hf, self.size = net, size

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.hf(pixel_values=x).logits


def _offline(repo: str) -> bool:
    return Path(repo).is_dir() or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not _hub_reachable()


def _unavailable(repo: str, reason: str) -> WeightsUnavailableError:
    from huggingface_hub import constants

    return WeightsUnavailableError(
        f"The Hugging Face model {repo!r} is not available: {reason}\nIt is looked for in the Hugging Face cache "
        f"folder\n    {constants.HF_HUB_CACHE}\nTo use it offline, run `hf download {repo}` (huggingface_hub's "
        "command line) on a machine with internet and copy that cache folder here (or set HF_HUB_CACHE to a "
        "copy), or save the model and its processor or tokenizer with save_pretrained and pass "
        "hf/<that folder>",
        {
            "python": f"load_model('hf/<folder>') for a model saved with save_pretrained; the embedded model "
            f"{OFFLINE_MODEL!r} works offline: load_model({OFFLINE_MODEL!r})",
            "cli": f"--model hf/<folder> for a model saved with save_pretrained, or --model {OFFLINE_MODEL} "
            "(embedded, offline)",
            "app": f"start the app with a model saved with save_pretrained (--model hf/<folder>), or choose "
            f"{OFFLINE_MODEL} (it works offline)",
        },
    )


def _why(repo: str, local: bool, error: OSError) -> str:
    """Why loading ``repo`` failed, in words: not cached and offline, or the loader's own first line."""
    if local and not Path(repo).is_dir():
        return f"it is not in the cache and {HUB_HOST} cannot be reached"
    return str(error).splitlines()[0]


@functools.lru_cache(maxsize=8)
def _pretrained(repo: str) -> Any:
    """(config, processor) of ``repo`` from the cache (or downloaded when the hub can be reached)."""
    t = _transformers()
    local = _offline(repo)
    try:
        config = t.AutoConfig.from_pretrained(repo, local_files_only=local)
        processor = t.AutoImageProcessor.from_pretrained(repo, local_files_only=local)
    except OSError as e:
        raise _unavailable(repo, _why(repo, local, e)) from e
    return config, processor


def _size(processor: Any) -> tuple[int, int] | None:
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def build(repo: str) -> nn.Module:
    """The architecture of ``repo``, randomly initialised (sdpa attention)."""
    t = _transformers()
    config, processor = _pretrained(repo)
    net = t.AutoModelForImageClassification.from_config(config, attn_implementation="sdpa")
    return HFImageClassifier(net, _size(processor))


def state_dict(repo: str) -> dict[str, Tensor]:
    """The pretrained weights of ``repo`` (keys of :class:`HFImageClassifier`)."""
    t = _transformers()
    try:
        net = t.AutoModelForImageClassification.from_pretrained(
            repo, local_files_only=_offline(repo), attn_implementation="sdpa"
        )
    except OSError as e:
        raise _unavailable(repo, str(e).splitlines()[0]) from e
    return {"hf." + k: v for k, v in net.state_dict().items()}


def classes(repo: str) -> ClassNames:
    config, _ = _pretrained(repo)
    labels = getattr(config, "id2label", None) or {}
    return ClassNames([str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(config.num_labels)])


def repo_of(name: str) -> str:
    """``hf/<repo>`` -> ``<repo>`` (a repo id or a folder)."""
    repo = name[len(HF_PREFIX) :].strip() if name.lower().startswith(HF_PREFIX) else name.strip()
    if not repo:
        raise ValueError("name the Hugging Face model: hf/<repo id>, e.g. hf/google/vit-base-patch16-224")
    return repo


def normalisation(repo: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image processor's mean and std (fails fast, with the offline message)."""
    _, processor = _pretrained(repo)
    mean = tuple(float(m) for m in (getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)))
    std = tuple(float(s) for s in (getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)))
    return mean, std


def text_model(repo: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a repo id or folder: a sequence classifier or a causal LM (by its
    config's architectures), sdpa attention, on the CPU as loaded."""
    t = _transformers()
    local = _offline(repo)
    try:
        config = t.AutoConfig.from_pretrained(repo, local_files_only=local)
        archs = getattr(config, "architectures", None) or []
        kind = (
            t.AutoModelForCausalLM
            if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
            else t.AutoModelForSequenceClassification
        )
        model = kind.from_pretrained(repo, local_files_only=local, attn_implementation="sdpa")
        tokenizer = t.AutoTokenizer.from_pretrained(repo, local_files_only=local)
    except OSError as e:
        raise _unavailable(repo, _why(repo, local, e)) from e
    return model, tokenizer
