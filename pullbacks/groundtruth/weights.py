"""The committed weights of the networks trained on the generated task
(``load_model("groundtruth/resnet")``, ``"groundtruth/vgg"``, ``"groundtruth/densenet"``,
``"groundtruth/vit"``; the registry entries are in :mod:`pullbacks.models.registry`)."""

from __future__ import annotations

from pathlib import Path

import torch

WEIGHTS = Path(__file__).resolve().parent / "weights"
PREFIX = "groundtruth/"
FAMILIES = ("resnet", "vgg", "densenet", "vit")
# recommended ReLU / max-pool temperatures, from the temperature sweep on the task
TEMPERATURES = {"resnet": 1.0, "vgg": 1.0, "densenet": 1.0, "vit": 1.0}


def build(family: str) -> torch.nn.Module:
    """The untrained network of ``family``."""
    from .models import ARCHITECTURES

    return ARCHITECTURES[family]()


def state_dict(family: str) -> dict:
    """The committed ``state_dict`` of ``family`` (WeightsUnavailableError with the command that makes it)."""
    from ..models.weights import WeightsUnavailableError

    path = WEIGHTS / f"{family}.pt"
    if not path.exists():
        raise WeightsUnavailableError(
            f"no trained weights for {PREFIX}{family} in this installation ({path.name} is missing); make them with "
            f"python -m pullbacks.groundtruth.train {family} --out out/groundtruth, then copy "
            f"out/groundtruth/{family}.pt to pullbacks/groundtruth/weights/")
    return torch.load(path, map_location="cpu", weights_only=True)
