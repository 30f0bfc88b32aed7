"""``evaluate()``: score attribution methods on sanity checks and faithfulness metrics.

from pullbacks.evaluation import evaluate, Settings
result = evaluate(model, images, targets, settings=Settings(ascent=AscentOptions(temperature=1.0)))
print(result.table()); result.save("out/evaluation")
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import as_target_tensor, check_inputs, check_model
from ..core.randomness import check_deterministic
from . import metrics as M
from .methods import DEFAULT_METHODS, METHODS, Settings, attribute, check_names
from .randomisation import randomisation_blocks, randomised_copies
from .report import COLUMNS, Evaluation


class _Progress:
    def __init__(self, total: float, enabled: bool):
        self.bar, self.done = None, 0.0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(total), desc="evaluate", unit="pass", dynamic_ncols=True)

    def step(self, what: str, units: float) -> None:
        self.done += units
        if self.bar is not None:
            self.bar.set_description(what, refresh=False)
            self.bar.update(round(units))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Run:
    """What every metric of one evaluation reads: the model, the batch, the attributions."""

    model: nn.Module
    x: Tensor
    t: Tensor
    methods: list[str]
    settings: Settings
    bar: _Progress
    names: list = field(default_factory=list)
    masks: Tensor | None = None  # (N, H, W) bool: the pixels that decide the class, where known
    attributions: dict = field(default_factory=dict)
    blocks: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def backward_units(self, m: str) -> int:  # 3 units per image backward
        return 3 * self.n * METHODS[m].backward_passes(self.settings)

    @property
    def forward_batch(self) -> int:  # no activations are kept for a backward pass
        return 4 * self.settings.batch_size

    @property
    def grid(self) -> int:
        p = self.settings.patch
        return math.ceil(self.x.shape[-2] / p) * math.ceil(self.x.shape[-1] / p)

    def with_abs(self) -> dict:
        """The attributions, and their magnitudes summed over channels under ``"<method>|abs"``."""
        return dict(
            self.attributions, **{f"{m}|abs": a.abs().sum(1, keepdim=True) for m, a in self.attributions.items()}
        )


def _randomisation(r: _Run, result: Evaluation) -> None:
    ref = {m: M.heatmap(a) for m, a in r.attributions.items()}
    sims = {m: [np.ones(r.n)] for m in r.methods}
    for block, copy in randomised_copies(r.model, r.blocks, seed=r.settings.seed):
        for m in r.methods:
            sims[m].append(M.spearman(ref[m], M.heatmap(attribute(copy, r.x, r.t, m, r.settings))))
            r.bar.step(f"randomised {block.label}: {m}", r.backward_units(m))
        del copy
    result.stages = ["original"] + [b.label for b in r.blocks]
    result.randomisation = {m: np.stack(v, axis=1) for m, v in sims.items()}
    result.scores["randomisation_top"] = {m: v[:, 1] for m, v in result.randomisation.items()}
    result.scores["randomisation_mean"] = {m: np.nanmean(v[:, 1:], axis=1) for m, v in result.randomisation.items()}


def _random_logit(r: _Run, result: Evaluation) -> None:
    from .suite import random_classes, random_logit

    with torch.no_grad():
        num_classes = r.model(r.x[:1]).shape[1]
    other = random_classes(r.t, _seeds(r), num_classes)
    result.scores["random_logit"] = random_logit(
        r.attributions, lambda m, classes: attribute(r.model, r.x, classes, m, r.settings), other
    )


def _faithfulness_correlation(r: _Run, result: Evaluation) -> None:
    from .suite import faithfulness_correlation

    result.scores["faithfulness_correlation"] = faithfulness_correlation(
        r.model, r.x, r.t, r.attributions, patch=r.settings.patch, baseline=r.settings.baseline, batch=r.forward_batch
    )


def _infidelity(r: _Run, result: Evaluation) -> None:
    from .suite import infidelity

    result.scores["infidelity"] = infidelity(
        r.model,
        r.x,
        r.t,
        r.attributions,
        _seeds(r),
        patches=r.settings.infidelity_patches,
        draws=r.settings.infidelity_draws,
        cumulative=r.settings.infidelity_cumulative,
        batch=r.forward_batch,
    )


def _infidelity_passes(r: _Run) -> int:
    from .suite import blocks

    h, w = r.x.shape[-2:]
    return r.n * (1 + r.settings.infidelity_draws * sum(len(blocks(h, w, p)) for p in r.settings.infidelity_patches))


def _region_perturbation(r: _Run, result: Evaluation) -> None:
    from .quantus import region_perturbation

    scores, curves = region_perturbation(
        r.model, r.x, r.t, r.with_abs(), patch=r.settings.patch, baseline=r.settings.baseline, batch=r.forward_batch
    )
    result.curves.update(curves)
    result.scores["region_perturbation"] = {m: scores[m] for m in r.methods}
    result.scores["region_perturbation_abs"] = {m: scores[f"{m}|abs"] for m in r.methods}


def _seeds(r: _Run) -> list[int]:
    from .data import image_seed

    return [image_seed(r.settings.seed, name) for name in r.names]


def _faithfulness_estimate(r: _Run, result: Evaluation) -> None:
    from .suite import faithfulness_estimate

    result.scores["faithfulness_estimate"] = faithfulness_estimate(
        r.model,
        r.x,
        r.t,
        r.attributions,
        features=r.settings.fe_features,
        baseline=r.settings.baseline,
        batch=r.forward_batch,
    )


def _monotonicity_correlation(r: _Run, result: Evaluation) -> None:
    from .suite import monotonicity_correlation

    result.scores["monotonicity_correlation"] = monotonicity_correlation(
        r.model,
        r.x,
        r.t,
        r.attributions,
        _seeds(r),
        features=r.settings.fe_features,
        samples=r.settings.mc_samples,
        softmax=r.settings.mc_softmax,
        batch=r.forward_batch,
    )


def _max_sensitivity(r: _Run, result: Evaluation) -> None:
    from .suite import max_sensitivity

    scores: dict[str, list] = {}
    for i in range(r.n):  # one image at a time: its noisy copies fill the batch

        def explain(method: str, xs: Tensor, i: int = i) -> Tensor:
            return attribute(r.model, xs, r.t[i : i + 1].expand(xs.shape[0]), method, r.settings)

        one = max_sensitivity(
            r.x[i : i + 1],
            {m: a[i : i + 1] for m, a in r.attributions.items()},
            explain,
            _seeds(r)[i : i + 1],
            samples=r.settings.ms_samples,
            radius=r.settings.ms_radius,
        )
        for m, v in one.items():
            scores.setdefault(m, []).append(v[0])
    result.scores["max_sensitivity"] = {m: np.array(v) for m, v in scores.items()}


def _evidence(column: str) -> Callable[[_Run, Evaluation], None]:
    """A metric against the known evidence (``suite.<column>(attributions, masks)``)."""

    def run(r: _Run, result: Evaluation) -> None:
        from . import suite

        if r.masks is None:
            raise ValueError(
                f"{column} compares maps with the pixels that decide the class, which these images do "
                "not come with; evaluate generated images whose evidence is known (--images "
                "groundtruth:N, or evaluate(..., masks=...)), or leave it out of the metrics"
            )
        result.scores[column] = getattr(suite, column)(r.attributions, r.masks)

    return run


def _chunk_passes(r: _Run) -> int:
    return len(r.methods) * r.n * math.ceil(r.x[0].numel() / r.settings.fe_features)


_ON_MOSAICS = (
    "runs on 2×2 mosaics of the dataset, not on single images: evaluate it with the command line "
    "(pullbacks evaluate --metrics focus --mosaics N) or pullbacks.evaluation.runner.run(..., "
    "mosaic_count=N)"
)


def _focus(r: _Run, result: Evaluation) -> None:
    raise ValueError(f"focus {_ON_MOSAICS}")


@dataclass(frozen=True)
class Metric:
    """One metric: the report's ``columns`` it fills (each described in ``report.COLUMNS``,
    with its better-is), ``run`` that fills them, ``cost`` its work in progress units, and
    what it ``needs``: ``"images"``, ``"masks"`` (the known evidence of a generated task) or
    ``"mosaics"`` (run by ``runner.py`` on 2×2 mosaics)."""

    columns: tuple[str, ...]
    run: Callable[[_Run, Evaluation], None]
    cost: Callable[[_Run], float] = lambda r: 0
    needs: str = "images"


METRICS: dict[str, Metric] = {
    "randomisation": Metric(
        ("randomisation_top", "randomisation_mean"),
        _randomisation,
        lambda r: len(r.blocks) * sum(map(r.backward_units, r.methods)),
    ),
    "random_logit": Metric(("random_logit",), _random_logit, lambda r: sum(map(r.backward_units, r.methods))),
    "faithfulness_correlation": Metric(
        ("faithfulness_correlation",), _faithfulness_correlation, lambda r: r.n * (r.grid + 1)
    ),
    "infidelity": Metric(("infidelity",), _infidelity, _infidelity_passes),
    "region_perturbation": Metric(
        ("region_perturbation", "region_perturbation_abs"),
        _region_perturbation,
        lambda r: 2 * len(r.methods) * r.n * (r.grid + 1),
    ),
    # the follow-up's (suite.py)
    "faithfulness_estimate": Metric(("faithfulness_estimate",), _faithfulness_estimate, _chunk_passes),
    "monotonicity_correlation": Metric(
        ("monotonicity_correlation",), _monotonicity_correlation, lambda r: _chunk_passes(r) * r.settings.mc_samples
    ),
    "max_sensitivity": Metric(
        ("max_sensitivity",), _max_sensitivity, lambda r: r.settings.ms_samples * sum(map(r.backward_units, r.methods))
    ),
    # against the known evidence of a generated task (pullbacks.groundtruth)
    **{
        k: Metric((k,), _evidence(k), needs="masks")
        for k in ("relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game")
    },
    "focus": Metric(("focus",), _focus, needs="mosaics"),  # the follow-up's, on mosaics (runner.py)
}
EVIDENCE = tuple(k for k, m in METRICS.items() if m.needs == "masks")
MOSAICS = tuple(k for k, m in METRICS.items() if m.needs == "mosaics")
assert all(c in COLUMNS for m in METRICS.values() for c in m.columns), "every column is described in report.py"


def evaluate(
    model: nn.Module,
    inputs: Tensor,
    targets: Any,
    *,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    settings: Settings = Settings(),  # noqa: B008 - frozen: one shared default is safe
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    model_name: str = "model",
    progress: bool = True,
    masks: Tensor | None = None,
) -> Evaluation:
    """Score ``methods`` (keys of ``METHODS``; default ``DEFAULT_METHODS``, ``["all"]`` all) on ``metrics`` (keys of
    ``METRICS``; default and ``["all"]``: those that need images alone, and those against known evidence when
    ``masks`` are given) for ``inputs`` ``(N, C, H, W)`` and one target class each.

    ``model`` must be in eval mode and is never modified (randomisation works on a deep copy).
    ``masks`` ``(N, H, W)`` bool: the pixels that decide each image's class, for the metrics
    against known evidence.
    """
    from . import captum, quantus  # noqa: F401 - the extras: their install hint before any work

    methods = check_names(methods, METHODS, "method", DEFAULT_METHODS)
    runnable = [k for k, m in METRICS.items() if m.needs == "images" or (masks is not None and m.needs == "masks")]
    metric_names = check_names(metrics, METRICS, "metric", runnable)
    if metrics is not None and list(metrics) == ["all"]:
        metric_names = runnable
    if any(k in MOSAICS for k in metric_names):
        raise ValueError(f"{', '.join(k for k in metric_names if k in MOSAICS)} {_ON_MOSAICS}")
    check_model(model)
    check_inputs(inputs)
    dev = M.device_of(model)
    x = inputs.detach().to(dev)
    t = as_target_tensor(targets, x.shape[0], dev)
    check_deterministic(model, x[:1])  # a random forward pass is refused before it draws
    names = list(names) if names is not None else [f"image {i}" for i in range(x.shape[0])]
    result = Evaluation(
        model_name=model_name,
        methods=methods,
        metrics=metric_names,
        image_names=names,
        targets=t.tolist(),
        target_names=[str(classes[i]) if classes is not None else str(i) for i in t.tolist()],
        settings=settings,
    )
    if masks is not None:
        masks = torch.as_tensor(masks).bool()
        if masks.shape != (x.shape[0], *x.shape[-2:]):
            raise ValueError(
                f"masks must have shape {(x.shape[0], *x.shape[-2:])} (one per image, of its height and "
                f"width), got {tuple(masks.shape)}"
            )
    run = _Run(model, x, t, methods, settings, _Progress(0, False), names, masks)
    run.blocks = randomisation_blocks(model, settings.blocks) if "randomisation" in metric_names else []
    if run.blocks and len(run.blocks) < settings.blocks:  # the model has fewer: the report says how many ran
        result.settings = dataclasses.replace(settings, blocks=len(run.blocks))
    total = sum(map(run.backward_units, methods)) + sum(METRICS[k].cost(run) for k in metric_names)
    run.bar = _Progress(total, progress)
    try:
        start = time.perf_counter()
        for m in methods:
            run.attributions[m] = attribute(model, x, t, m, settings)
            run.bar.step(f"attributions: {m}", run.backward_units(m))
        result.seconds["attributions"] = time.perf_counter() - start
        for name in metric_names:
            start, done = time.perf_counter(), run.bar.done
            METRICS[name].run(run, result)
            run.bar.step(name.replace("_", " "), METRICS[name].cost(run) - (run.bar.done - done))
            result.seconds[name] = time.perf_counter() - start
    finally:
        run.bar.close()
    return result
