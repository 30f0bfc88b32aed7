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
# (python -m pullbacks.experiments.sweep); the ViT's other families are scaled by the same factor
TEMPERATURES = {"resnet": 1.0, "vgg": 1.0, "densenet": 1.0, "vit": 0.5}


def family_temperatures(family: str) -> dict | None:
    """The recommended temperatures of the families beyond ReLU (the ViT's: the rule table's
    defaults scaled like its ReLU's, as the sweep scales them; None for the CNNs)."""
    if family != "vit":
        return None
    from ..core.table import default_temperatures

    return {k: v * TEMPERATURES[family] for k, v in default_temperatures().items()}


def build(family: str) -> torch.nn.Module:
    """The untrained network of ``family``."""
    from .models import ARCHITECTURES

    return ARCHITECTURES[family]()


def state_dict(family: str) -> dict:
    """The committed ``state_dict`` of ``family`` (FileNotFoundError with the command that makes it;
    the model registry reports it as its WeightsUnavailableError)."""
    path = WEIGHTS / f"{family}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"no trained weights for {PREFIX}{family} in this installation ({path.name} is missing); make them with "
            f"python -m pullbacks.groundtruth.train {family} --out out/groundtruth, then copy "
            f"out/groundtruth/{family}.pt to pullbacks/groundtruth/weights/"
        )
    return torch.load(path, map_location="cpu", weights_only=True)
