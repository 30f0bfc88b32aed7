"""``evaluate()``: score attribution methods on sanity checks and faithfulness metrics.

    from pullbacks.evaluation import evaluate, Settings
    result = evaluate(model, images, targets, settings=Settings(ascent=AscentOptions(temperature=1.0)))
    print(result.table()); result.save("media/evaluation")
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import as_target_tensor, check_inputs, check_model
from . import metrics as M
from .methods import METHODS, Settings, attribute, check_names
from .randomisation import randomisation_blocks, randomised_copies
from .report import METRICS, Evaluation


class _Progress:
    def __init__(self, total: float, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(total), desc="evaluate", unit="pass", dynamic_ncols=True)

    def step(self, what: str, units: float) -> None:
        if self.bar is not None:
            self.bar.set_description(what, refresh=False)
            self.bar.update(round(units))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate(
    model: nn.Module,
    inputs: Tensor,
    targets,
    *,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    settings: Settings = Settings(),
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    model_name: str = "model",
    progress: bool = True,
) -> Evaluation:
    """Score ``methods`` (keys of ``METHODS``; default all) on ``metrics`` (keys of
    ``METRICS``; default all) for ``inputs`` ``(N, C, H, W)`` and one target class each.

    ``model`` must be in eval mode and is never modified (randomisation works on a deep copy).
    """
    
    from .captum import infidelity
    from .quantus import explain_func, random_logit, region_perturbation

    methods = check_names(methods, METHODS, "method")
    metric_names = check_names(metrics, METRICS, "metric")
    check_model(model)
    check_inputs(inputs)
    s = settings
    dev = M.device_of(model)
    x = inputs.detach().to(dev)
    t = as_target_tensor(targets, x.shape[0], dev)
    n = x.shape[0]
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    names = list(names) if names is not None else [f"image {i}" for i in range(n)]
    result = Evaluation(
        model_name=model_name, methods=methods, metrics=metric_names, image_names=names,
        targets=t.tolist(), target_names=[str(classes[i]) if classes is not None else str(i) for i in t.tolist()],
        settings=s,
    )

    blocks = randomisation_blocks(model, s.blocks) if "randomisation" in metric_names else []
    bw = {m: 3 * n * METHODS[m].backward_passes(s) for m in methods}  # 3 units per image backward
    total = sum(bw.values()) * (1 + len(blocks) + ("random_logit" in metric_names))
    total += n * (s.fc_runs + 1) if "faithfulness_correlation" in metric_names else 0
    total += len(methods) * n * s.infidelity_samples if "infidelity" in metric_names else 0
    grid = math.ceil(x.shape[-2] / s.patch) * math.ceil(x.shape[-1] / s.patch)
    total += 2 * len(methods) * n * (grid + 1) if "region_perturbation" in metric_names else 0
    forward_batch = 4 * s.batch_size  # no activations are kept for a backward pass
    bar = _Progress(total, progress)
    try:
        start = time.perf_counter()
        attributions = {}
        for m in methods:
            attributions[m] = attribute(model, x, t, m, s)
            bar.step(f"attributions: {m}", bw[m])
        result.seconds["attributions"] = time.perf_counter() - start

        if "randomisation" in metric_names:
            start = time.perf_counter()
            ref = {m: M.heatmap(a) for m, a in attributions.items()}
            sims = {m: [np.ones(n)] for m in methods}
            for block, copy in randomised_copies(model, blocks, seed=s.seed):
                for m in methods:
                    a = attribute(copy, x, t, m, s)
                    sims[m].append(M.spearman(ref[m], M.heatmap(a)))
                    bar.step(f"randomised {block.label}: {m}", bw[m])
                del copy
            result.stages = ["original"] + [b.label for b in blocks]
            result.randomisation = {m: np.stack(v, axis=1) for m, v in sims.items()}
            result.scores["randomisation_top"] = {m: v[:, 1] for m, v in result.randomisation.items()}
            result.scores["randomisation_mean"] = {m: np.nanmean(v[:, 1:], axis=1)
                                                  for m, v in result.randomisation.items()}
            result.seconds["randomisation"] = time.perf_counter() - start

        if "random_logit" in metric_names:
            start = time.perf_counter()
            scores = {}
            for m in methods:
                scores.update(random_logit(model, x, t, {m: attributions[m]}, explain_func, num_classes=num_classes,
                                             seed=s.seed, batch=max(n, s.batch_size),
                                             explain_kwargs={m: dict(settings=s, reduce="abs")}))
                bar.step(f"random logit: {m}", bw[m])
            result.scores["random_logit"] = scores
            result.seconds["random_logit"] = time.perf_counter() - start

        if "faithfulness_correlation" in metric_names:
            start = time.perf_counter()
            both = dict(attributions, **{f"{m}|abs": a.abs().sum(1, keepdim=True) for m, a in attributions.items()})
            scores = M.faithfulness_correlation(model, x, t, both, patch=s.patch, subset=s.fc_subset, runs=s.fc_runs,
                                                baseline=s.baseline, seed=s.seed, batch=forward_batch)
            result.scores["faithfulness_correlation"] = {m: scores[m] for m in methods}
            result.scores["faithfulness_correlation_abs"] = {m: scores[f"{m}|abs"] for m in methods}
            bar.step("faithfulness correlation", n * (s.fc_runs + 1))
            result.seconds["faithfulness_correlation"] = time.perf_counter() - start

        if "infidelity" in metric_names:
            start = time.perf_counter()
            scores = {}
            for m in methods:
                scores.update(infidelity(model, x, t, {m: attributions[m]}, patch=s.patch, p=s.infidelity_p,
                                           samples=s.infidelity_samples, baseline=s.baseline, seed=s.seed,
                                           batch=forward_batch))
                bar.step(f"infidelity: {m}", n * s.infidelity_samples)
            result.scores["infidelity"] = scores
            result.seconds["infidelity"] = time.perf_counter() - start

        if "region_perturbation" in metric_names:
            start = time.perf_counter()
            both = dict(attributions, **{f"{m}|abs": a.abs().sum(1, keepdim=True) for m, a in attributions.items()})
            scores, curves = region_perturbation(model, x, t, both, patch=s.patch, baseline=s.baseline,
                                                   batch=forward_batch)
            result.curves.update(curves)
            bar.step("region perturbation", 2 * len(methods) * n * (grid + 1))
            result.scores["region_perturbation"] = {m: scores[m] for m in methods}
            result.scores["region_perturbation_abs"] = {m: scores[f"{m}|abs"] for m in methods}
            result.seconds["region_perturbation"] = time.perf_counter() - start
    finally:
        bar.close()
    return result
