"""What fixes an evaluation's numbers: :class:`Settings` (the methods' and the metrics' parameters
and the seed), validated when built."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..core.options import AscentOptions
from ..core.validators import plain_number, positive_integer, positive_number


@dataclass(frozen=True)
class Settings:
    """Everything that fixes the numbers. Defaults fit 15 minutes on 2 CPU cores for
    EfficientNet-Lite0 on the 4 built-in photos. Perturbation values are in the models'
    ``[-1, 1]`` input space (``baseline=0.0`` is mid-grey)."""

    ascent: AscentOptions = AscentOptions()  # the pullback's gates and both ascents (method is set per method)
    ig_steps: int = 32  # Integrated Gradients, Gauss-Legendre points, from `baseline`
    smoothgrad_samples: int = 50  # also SmoothPullback's (the follow-up's)
    smoothgrad_sigma: float = 0.15  # noise std in the [-1, 1] space: the follow-up's (SmoothGrad, SmoothPullback, Shap)
    shap_samples: int = 16  # GradientShap / PullbackShap: noisy points between the baseline and the input
    baseline: float = 0.0  # IG baseline and the value perturbed patches take
    blocks: int = 5  # randomisation: layer blocks re-initialised in cascade, top first
    patch: int = 56  # faithfulness correlation, region perturbation: a 4×4 grid of patches on 224×224
    infidelity_patches: tuple[int, ...] = (112, 56)  # infidelity: every patch of each size
    infidelity_draws: int = 5  # infidelity: draws of the uniform baseline over every patch
    infidelity_cumulative: bool = (
        True  # earlier patches of a draw stay replaced (the follow-up's loop); False: ours, one at a time
    )
    fe_features: int = 3136  # faithfulness estimate / monotonicity: entries per chunk (the follow-up's)
    mc_samples: int = 10  # monotonicity correlation: uniform-baseline draws per chunk
    mc_softmax: bool = (
        True  # monotonicity correlation on probabilities (Quantus' default, the follow-up's); False: logits
    )
    ms_samples: int = 10  # max-sensitivity: noise draws
    ms_radius: float = 0.02  # max-sensitivity: noise amplitude in [-1, 1] units
    batch_size: int = 16  # images per forward/backward pass (forward-only passes take 4 × batch_size)
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate every field (``Settings(ig_steps=-3)`` fails here, naming the field)."""
        if not isinstance(self.ascent, AscentOptions):
            raise TypeError(f"Settings.ascent must be a pullbacks.AscentOptions, got {self.ascent!r}")
        for name in (
            "ig_steps",
            "smoothgrad_samples",
            "shap_samples",
            "blocks",
            "patch",
            "infidelity_draws",
            "fe_features",
            "mc_samples",
            "ms_samples",
            "batch_size",
        ):
            object.__setattr__(self, name, positive_integer(getattr(self, name), f"Settings.{name}"))
        object.__setattr__(self, "ms_radius", positive_number(self.ms_radius, "Settings.ms_radius"))
        sigma = plain_number(self.smoothgrad_sigma)  # 0: SmoothGrad is the gradient
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 <= float(sigma) < math.inf:
            raise ValueError(f"Settings.smoothgrad_sigma must be a finite number >= 0, got {self.smoothgrad_sigma!r}")
        object.__setattr__(self, "smoothgrad_sigma", float(sigma))
        baseline = plain_number(self.baseline)
        if isinstance(baseline, bool) or not isinstance(baseline, numbers.Real) or not math.isfinite(baseline):
            raise ValueError(
                f"Settings.baseline must be a finite number (a value in the [-1, 1] input space), got {self.baseline!r}"
            )
        object.__setattr__(self, "baseline", float(baseline))
        patches = self.infidelity_patches
        if isinstance(patches, (int, numbers.Integral)) and not isinstance(patches, bool):
            patches = (patches,)
        if not isinstance(patches, (tuple, list)) or not patches:
            raise ValueError(
                f"Settings.infidelity_patches must be a tuple of patch sizes such as (112, 56), "
                f"got {self.infidelity_patches!r}"
            )
        object.__setattr__(
            self, "infidelity_patches", tuple(positive_integer(p, "Settings.infidelity_patches[...]") for p in patches)
        )
        for name in ("infidelity_cumulative", "mc_softmax"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Settings.{name} must be True or False, got {getattr(self, name)!r}")
        seed = plain_number(self.seed)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"Settings.seed must be an integer >= 0, got {self.seed!r}")
        object.__setattr__(self, "seed", int(seed))
