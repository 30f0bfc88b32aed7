"""The Quantus side: ``explain_func`` for any Quantus metric, and the metric we take from
Quantus as it is (region perturbation).

    quantus.RegionPerturbation(...)(..., explain_func=pullbacks.evaluation.quantus.explain_func,
                                     explain_func_kwargs=dict(method="pullback", temperature=1.0))
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

try:
    import quantus
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(f"{e}; the evaluation needs the extras: pip install 'pullbacks[evaluate]'") from e

from ..core.options import AscentOptions
from .methods import Settings, attribute
from .metrics import device_of, numpy_rng_preserved, patch_grid


def _reduce(a: Tensor, reduce: str | None) -> Tensor:
    if reduce is None or reduce == "none":
        return a
    if reduce == "sum":
        return a.sum(1, keepdim=True)
    if reduce == "abs":
        return a.abs().sum(1, keepdim=True)
    raise ValueError(f"reduce must be 'sum', 'abs' or None, got {reduce!r}")


def explain_func(
    model: nn.Module,
    inputs: Any,
    targets: Any,
    *,
    method: str = "pullback",
    reduce: str | None = "sum",
    device: Any = None,
    settings: Settings | None = None,
    **options: Any,
) -> np.ndarray:
    """A Quantus ``explain_func``: attributions of ``inputs`` (numpy or tensor, ``(N, C, H, W)``)
    for ``targets`` (ints) as a float32 numpy array.

    ``method``: a key of ``METHODS``. ``reduce``: ``"sum"`` (default, Quantus's convention)
    sums over channels to ``(N, 1, H, W)`` (the follow-up's evaluation keeps the channels:
    ``reduce=None``), ``"abs"`` sums ``|a|`` over channels, ``None``
    keeps ``(N, C, H, W)``. ``settings``: a :class:`Settings`; other keywords are its fields
    (``ig_steps=16``) or ascent options (``temperature=1.0``, ``steps=5``). ``device``
    (passed by Quantus) is ignored: the model's own device is used.
    """
    s = settings or Settings()
    fields = set(Settings.__dataclass_fields__) - {"ascent"}
    ascent = {k: v for k, v in options.items() if k not in fields}
    unknown = sorted(set(ascent) - set(AscentOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(
            f"explain_func got unknown settings {unknown}; valid: {sorted(fields)} and the "
            f"ascent options {sorted(AscentOptions.__dataclass_fields__)}"
        )
    s = replace(s, ascent=s.ascent.replace(**ascent), **{k: v for k, v in options.items() if k in fields})
    dev = device_of(model)
    x = torch.as_tensor(
        np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs, dtype=torch.float32, device=dev
    )
    y = torch.as_tensor(
        np.asarray(targets).reshape(-1) if not isinstance(targets, Tensor) else targets, dtype=torch.long, device=dev
    ).reshape(-1)
    if y.numel() == 1 and x.shape[0] > 1:
        y = y.expand(x.shape[0])
    a = attribute(model, x, y, method, s)
    return _reduce(a, reduce).cpu().numpy().astype(np.float32)


@contextmanager
def _quiet() -> Iterator[None]:
    """Quantus warns about its parameterisation on every call; the report documents it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def region_perturbation(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    attributions: dict[str, Tensor],
    *,
    patch: int = 56,
    regions: int | None = None,
    baseline: float = 0.0,
    batch: int = 16,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Region perturbation, most relevant first (Samek et al. 2017), with Quantus.

    Quantus's ``RegionPerturbation`` ranks the non-overlapping ``patch × patch`` squares by
    their summed signed attribution and replaces them by ``baseline`` one after another,
    recording the drop of the target logit ``f(x) - f(x_k)`` after each. Returns
    ``(aopc, curves)``: per input, the mean drop over the ``regions`` steps (the area over
    the perturbation curve, higher is better) and the curves themselves ``(N, regions)``.
    Attributions are summed over channels (pass ``|a|`` maps to rank by magnitude).
    """
    n, _, h, w = inputs.shape
    gh, gw = patch_grid(h, w, patch)
    regions = gh * gw if regions is None else regions
    x = inputs.detach().cpu().numpy().astype(np.float32)
    y = targets.cpu().numpy()
    metric = quantus.RegionPerturbation(
        patch_size=patch,
        regions_evaluation=regions,
        order="morf",
        perturb_baseline=float(baseline),  # type: ignore[arg-type]  # Quantus takes a number too (its annotation says str)
        abs=False,
        normalise=False,
        return_aggregate=False,
        disable_warnings=True,
    )
    # every method's copy of the inputs goes through Quantus as one stacked batch: the
    # samples are independent, and the model then runs on batches of `batch` images
    keys = list(attributions)
    a_np = np.concatenate([attributions[k].detach().sum(1, keepdim=True).cpu().numpy() for k in keys])
    with _quiet(), numpy_rng_preserved():
        result = metric(
            model=model,
            x_batch=np.concatenate([x] * len(keys)),
            y_batch=np.tile(y, len(keys)),
            a_batch=a_np.astype(np.float32),
            channel_first=True,
            softmax=False,
            device=str(inputs.device),
            batch_size=batch,
        )
    stacked = np.asarray(result, dtype=np.float64).reshape(len(keys), n, -1)
    curves = {k: stacked[i] for i, k in enumerate(keys)}
    aopc = {k: c.mean(axis=1) for k, c in curves.items()}
    return aopc, curves
