"""Is it faithful? Sanity checks and faithfulness metrics for pullbacks against gradient baselines.

One command answers it for any model the package loads::

    pullbacks evaluate --model efficientnet_lite0          # offline, a few minutes on a CPU

and the same from Python::

    from pullbacks.evaluate import evaluate, Settings
    result = evaluate(model, images, targets, settings=Settings(temperature=1.0))
    print(result.table()); result.save("media/evaluation")

Methods (``METHODS``): the excitation pullback (one backward step), pullback ascent
(``x_5 - x_0`` after 5 steps), the vanilla gradient, gradient ascent, Input × Gradient,
SmoothGrad and Integrated Gradients; the vanilla gradient, Input × Gradient, SmoothGrad and
Integrated Gradients are Captum's. Metrics (``METRICS``, filling the table's ``COLUMNS``)
are described in :mod:`pullbacks.metrics`.

Our methods plug into both libraries:

* Captum: ``ExcitationPullback(model, temperature=1.0).attribute(x, target=y)`` (also
  ``PullbackAscent``, ``GradientAscent``), Captum ``GradientAttribution`` subclasses, so
  ``captum.attr.NoiseTunnel(ExcitationPullback(model))`` gives a SmoothGrad'ed pullback.
* Quantus: ``explain_func(model, inputs, targets, method="pullback", temperature=1.0)``
  returns a numpy array ``(N, 1, H, W)``, for ``explain_func=`` of any Quantus metric.

Captum, Quantus, SciPy and Matplotlib are imported only when used
(``pip install 'pullbacks[evaluate]'``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .ascent import gradient_ascent
from .checks import as_target_tensor, check_inputs, check_model
from .cli import positive_float, positive_int
from .metrics import _device_of
from .pullback import excitation_pullback

__all__ = [
    "METHODS",
    "METRICS",
    "COLUMNS",
    "PAIRS",
    "Settings",
    "Evaluation",
    "attribute",
    "explain_func",
    "evaluate",
    "ExcitationPullback",
    "PullbackAscent",
    "GradientAscent",
    "add_arguments",
    "run",
]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything that fixes the numbers. Defaults fit 15 minutes on 2 CPU cores for
    EfficientNet-Lite0 on the 4 built-in photos. Perturbation values are in the models'
    ``[-1, 1]`` input space (``baseline=0.0`` is mid-grey)."""

    temperature: float = 0.3  # pullback gate temperature (the CLI uses the model's recommended one)
    pool_temperature: float | None = None  # max-pool temperature (None: the ReLU temperature)
    ascent_steps: int = 5  # pullback / gradient ascent (METHOD.md §5)
    alpha: float = 20.0
    eps: float | None = 100.0
    ig_steps: int = 32  # Integrated Gradients, Gauss-Legendre points, from `baseline`
    smoothgrad_samples: int = 16
    smoothgrad_sigma: float = 0.3  # noise std: 15 % of the input range of 2 (Smilkov et al.)
    baseline: float = 0.0  # IG baseline and the value perturbed patches take
    blocks: int = 5  # randomisation: layer blocks re-initialised in cascade, top first
    patch: int = 56  # perturbation patches: a 4×4 grid on 224×224
    fc_subset: int = 4  # faithfulness correlation: patches replaced per run
    fc_runs: int = 128
    infidelity_p: float = 0.25  # infidelity: probability that a patch is removed
    infidelity_samples: int = 32
    batch: int = 16  # images per forward/backward pass (forward-only passes take 4 × batch)
    seed: int = 0


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    label: str
    description: str
    backward_passes: Callable[[Settings], int]  # per image, for the progress bar


METHODS: dict[str, Method] = {
    "pullback": Method("Excitation pullback", "one backward pass with soft gates", lambda s: 1),
    "pullback_ascent": Method("Pullback ascent", "x_steps - x_0 along the pullback", lambda s: s.ascent_steps),
    "gradient": Method("Vanilla gradient", "Captum Saliency, signed", lambda s: 1),
    "gradient_ascent": Method("Gradient ascent", "x_steps - x_0 along the gradient", lambda s: s.ascent_steps),
    "input_x_gradient": Method("Input × Gradient", "Captum InputXGradient", lambda s: 1),
    "smoothgrad": Method("SmoothGrad", "Captum NoiseTunnel(Saliency), signed", lambda s: s.smoothgrad_samples),
    "integrated_gradients": Method("Integrated Gradients", "Captum IntegratedGradients", lambda s: s.ig_steps),
}
PAIRS = (("pullback", "gradient"), ("pullback_ascent", "gradient_ascent"))


def _chunks(n: int, size: int):
    for i in range(0, n, max(1, size)):
        yield slice(i, min(n, i + max(1, size)))


def attribute(model: nn.Module, inputs: Tensor, targets, method: str, settings: Settings = Settings()) -> Tensor:
    """The attribution of ``method`` (a key of ``METHODS``): a tensor shaped like ``inputs``, signed.

    Computed in chunks of ``settings.batch`` inputs, with gradients enabled even when the
    caller runs under ``torch.no_grad()``.
    """
    if method not in METHODS:
        raise ValueError(_unknown("method", method, METHODS))
    check_model(model)
    check_inputs(inputs)
    t = as_target_tensor(targets, inputs.shape[0], inputs.device)
    out = []
    # SmoothGrad goes one input at a time, its noise seeded by the input's index, so that
    # results do not depend on the batch size (its noise samples still fill the batch)
    size = 1 if method == "smoothgrad" else settings.batch
    for sl in _chunks(inputs.shape[0], size):
        with torch.enable_grad():
            out.append(_attribute_chunk(model, inputs[sl].detach(), t[sl], method, settings, sl.start).detach())
    return torch.cat(out)


def _attribute_chunk(model: nn.Module, x: Tensor, y: Tensor, method: str, s: Settings, index: int = 0) -> Tensor:
    from .metrics import _forked_rng

    gates = dict(temperature=s.temperature, pool_temperature=s.pool_temperature)
    if method == "pullback":
        return excitation_pullback(model, x, y, **gates)
    if method in ("pullback_ascent", "gradient_ascent"):
        kind = "pullback" if method == "pullback_ascent" else "gradient"
        return gradient_ascent(model, x, y, steps=s.ascent_steps, alpha=s.alpha, eps=s.eps, method=kind, **gates) - x

    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    x = x.clone().requires_grad_(True)  # a fresh leaf (Captum warns otherwise)
    if method == "gradient":
        return Saliency(model).attribute(x, target=y, abs=False)
    if method == "input_x_gradient":
        return InputXGradient(model).attribute(x, target=y)
    if method == "smoothgrad":
        with _forked_rng(s.seed * 1_000_003 + index, x.device):  # reproducible; the caller's RNG is restored
            return NoiseTunnel(Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=s.smoothgrad_samples, stdevs=s.smoothgrad_sigma,
                nt_samples_batch_size=max(1, s.batch // x.shape[0]), target=y, abs=False)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(
            x, baselines=s.baseline, target=y, n_steps=s.ig_steps, internal_batch_size=s.batch)
    raise AssertionError(method)  # pragma: no cover - METHODS and this function disagree


def _reduce(a: Tensor, reduce: str | None) -> Tensor:
    if reduce is None or reduce == "none":
        return a
    if reduce == "sum":
        return a.sum(1, keepdim=True)
    if reduce == "abs":
        return a.abs().sum(1, keepdim=True)
    raise ValueError(f"reduce must be 'sum', 'abs' or None, got {reduce!r}")


def explain_func(model: nn.Module, inputs, targets, *, method: str = "pullback", reduce: str | None = "sum",
                 device=None, **settings) -> np.ndarray:
    """A Quantus ``explain_func``: attributions of ``inputs`` (numpy or tensor, ``(N, C, H, W)``)
    for ``targets`` (ints) as a float32 numpy array.

    ``method``: a key of ``METHODS``. ``reduce``: ``"sum"`` (default, Quantus's convention)
    sums over channels to ``(N, 1, H, W)``, ``"abs"`` sums ``|a|`` over channels, ``None``
    keeps ``(N, C, H, W)``. Other keywords are :class:`Settings` fields (``temperature=1.0``,
    ``ig_steps=16``, ...); ``device`` (passed by Quantus) is where the model lives.
    """
    unknown = set(settings) - set(Settings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"explain_func got unknown settings {sorted(unknown)}; "
                        f"valid: {sorted(Settings.__dataclass_fields__)}")
    dev = _device_of(model)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs,
                        dtype=torch.float32, device=dev)
    y = torch.as_tensor(np.asarray(targets).reshape(-1) if not isinstance(targets, Tensor) else targets,
                        dtype=torch.long, device=dev).reshape(-1)
    if y.numel() == 1 and x.shape[0] > 1:
        y = y.expand(x.shape[0])
    a = attribute(model, x, y, method, Settings(**settings))
    return _reduce(a, reduce).cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------- Captum adapters


def _captum_target(model: nn.Module, inputs: Tensor, target) -> Tensor:
    """Captum's ``target`` (int, list of ints, tensor, or None for the predicted class)."""
    if target is None:
        with torch.no_grad():
            return model(inputs).argmax(1)
    if isinstance(target, tuple) or (isinstance(target, list) and target and isinstance(target[0], tuple)):
        raise TypeError("pullback adapters explain classifier logits: give one int class per input, not tuples")
    return as_target_tensor(target, inputs.shape[0], inputs.device)


def _make_adapters() -> dict[str, type]:
    from captum.attr import GradientAttribution

    try:
        from captum.log import log_usage
    except ImportError:  # pragma: no cover - older Captum
        import functools

        def log_usage(*_a, **_k):
            return lambda f: functools.wraps(f)(lambda *a, **k: f(*a, **k))

    class ExcitationPullback(GradientAttribution):
        """Captum-style excitation pullback: ``ExcitationPullback(model, temperature=...).attribute(x, target=y)``.

        Returns ``d/dx sum_i logits[i, target_i]`` with soft backward gates (METHOD.md §2–3),
        a tensor shaped like ``inputs``. ``target=None`` explains the predicted class.
        Works inside ``captum.attr.NoiseTunnel``.
        """

        def __init__(self, model: nn.Module, temperature: float = 0.3, pool_temperature: float | None = None,
                     gate: str = "sigmoid", pool: str = "soft") -> None:
            super().__init__(model)
            self.temperature, self.pool_temperature, self.gate, self.pool = temperature, pool_temperature, gate, pool

        @log_usage()
        def attribute(self, inputs: Tensor, target=None, additional_forward_args=None) -> Tensor:
            if additional_forward_args is not None:
                raise TypeError("additional_forward_args are not supported: the model must take the inputs alone")
            t = _captum_target(self.forward_func, inputs, target)
            return excitation_pullback(self.forward_func, inputs, t, temperature=self.temperature,
                                       pool_temperature=self.pool_temperature, gate=self.gate, pool=self.pool)

    class PullbackAscent(GradientAttribution):
        """Captum-style ascent attribution: ``x_steps - x_0`` after ``steps`` projected ascent
        steps along the pullback (METHOD.md §5), as the paper shows it."""

        method = "pullback"

        def __init__(self, model: nn.Module, steps: int = 5, alpha: float = 20.0, eps: float | None = 100.0,
                     clip=(-1.0, 1.0), temperature: float = 0.3, pool_temperature: float | None = None,
                     gate: str = "sigmoid", pool: str = "soft") -> None:
            super().__init__(model)
            self.kwargs = dict(steps=steps, alpha=alpha, eps=eps, clip=clip, temperature=temperature,
                               pool_temperature=pool_temperature, gate=gate, pool=pool)

        @log_usage()
        def attribute(self, inputs: Tensor, target=None, additional_forward_args=None) -> Tensor:
            if additional_forward_args is not None:
                raise TypeError("additional_forward_args are not supported: the model must take the inputs alone")
            t = _captum_target(self.forward_func, inputs, target)
            x0 = inputs.detach()
            return gradient_ascent(self.forward_func, x0, t, method=self.method, **self.kwargs) - x0

    class GradientAscent(PullbackAscent):
        """Like :class:`PullbackAscent`, along the vanilla gradient."""

        method = "gradient"

    for cls in (ExcitationPullback, PullbackAscent, GradientAscent):
        cls.__module__ = __name__
    return {c.__name__: c for c in (ExcitationPullback, PullbackAscent, GradientAscent)}


_ADAPTERS: dict[str, type] = {}


def __getattr__(name: str):  # the Captum adapters are built on first use (Captum loads lazily)
    if name in ("ExcitationPullback", "PullbackAscent", "GradientAscent"):
        if not _ADAPTERS:
            _ADAPTERS.update(_make_adapters())
        return _ADAPTERS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Column:
    label: str
    better: str  # "lower" or "higher"
    fmt: str
    description: str


METRICS: dict[str, tuple[str, ...]] = {  # CLI metric name → the table columns it fills
    "randomisation": ("randomisation_top", "randomisation_mean"),
    "random_logit": ("random_logit",),
    "faithfulness_correlation": ("faithfulness_correlation", "faithfulness_correlation_abs"),
    "infidelity": ("infidelity",),
    "region_perturbation": ("region_perturbation", "region_perturbation_abs"),
}
COLUMNS: dict[str, Column] = {
    "randomisation_top": Column(
        "Randomisation, top layer", "lower", ".2f",
        "Spearman ρ of |a| before vs after re-initialising the logit layer"),
    "randomisation_mean": Column(
        "Randomisation, cascade mean", "lower", ".2f",
        "Spearman ρ of |a| vs the original, averaged over the {blocks} cascade stages; ours"),
    "random_logit": Column(
        "Random logit", "lower", ".2f",
        "Spearman ρ of |a| for the true class vs a random other class (Quantus RandomLogit)"),
    "faithfulness_correlation": Column(
        "Faithfulness corr.", "higher", ".2f",
        "Pearson r of signed attribution sums vs logit drops over {fc_runs} runs, each setting {fc_subset} "
        "random {patch}×{patch} patches to {baseline:g} (grey); ours"),
    "faithfulness_correlation_abs": Column(
        "Faithfulness corr., |a|", "higher", ".2f",
        "the same with the attribution's magnitude Σ_c |a_c| (the saliency-map reading)"),
    "infidelity": Column(
        "Infidelity", "lower", ".3g",
        "Captum infidelity (normalize=True), {infidelity_samples} samples, each {patch}×{patch} square set to "
        "{baseline:g} with probability {infidelity_p:g}; unit logit²"),
    "region_perturbation": Column(
        "Region pert. AOPC", "higher", ".2f",
        "mean logit drop as {patch}×{patch} patches are set to {baseline:g} one by one, largest signed "
        "attribution sum first (Quantus RegionPerturbation, all patches)"),
    "region_perturbation_abs": Column(
        "Region pert. AOPC, |a|", "higher", ".2f",
        "the same, ranking the patches by Σ_c |a_c|"),
}


def _md(text: str) -> str:
    """Text for a Markdown table cell (``|a|`` would end the cell)."""
    return text.replace("|", "\\|")


@dataclass
class Evaluation:
    """Per-image scores of every method on every metric, and what produced them."""

    model_name: str
    methods: list[str]
    metrics: list[str]
    image_names: list[str]
    targets: list[int]
    target_names: list[str]
    settings: Settings
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # column → method → (N,)
    randomisation: dict[str, np.ndarray] = field(default_factory=dict)  # method → (N, stages + 1)
    stages: list[str] = field(default_factory=list)  # "original", then each block
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # region perturbation, method → (N, K)
    seconds: dict[str, float] = field(default_factory=dict)
    command: str | None = None

    @property
    def columns(self) -> list[str]:
        return [c for c in COLUMNS if c in self.scores]

    def table(self) -> str:
        """Markdown: mean ± standard error over the images, one row per method."""
        from .metrics import mean_se

        cols = self.columns
        arrow = {"lower": "↓", "higher": "↑"}
        head = "| Method | " + " | ".join(_md(f"{COLUMNS[c].label} {arrow[COLUMNS[c].better]}") for c in cols) + " |"
        lines = [head, "|---" * (len(cols) + 1) + "|"]
        for m in self.methods:
            cells = []
            for c in cols:
                mean, se = mean_se(self.scores[c][m])
                f = COLUMNS[c].fmt
                cells.append(f"{mean:{f}} ± {se:{f}}" if math.isfinite(se) else f"{mean:{f}}")
            lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def differences(self) -> list[dict]:
        """Paired differences (per image) of each pair in ``PAIRS``, with a bootstrap 95 % interval."""
        from .metrics import bootstrap_ci

        rows = []
        for a, b in PAIRS:
            if a not in self.methods or b not in self.methods:
                continue
            for c in self.columns:
                d = self.scores[c][a] - self.scores[c][b]
                finite = d[np.isfinite(d)]
                mean = float(finite.mean()) if finite.size else math.nan
                lo, hi = bootstrap_ci(d, seed=self.settings.seed)
                sign = 1 if COLUMNS[c].better == "higher" else -1
                if finite.size < 2:
                    verdict = "too few images"
                elif not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 <= hi:
                    verdict = "no clear difference"
                else:
                    verdict = f"{METHODS[a].label} better" if sign * mean > 0 else f"{METHODS[a].label} worse"
                rows.append(dict(pair=(a, b), column=c, mean=mean, ci=(lo, hi), verdict=verdict,
                                 wins=int((sign * finite > 0).sum()), n=int(finite.size)))
        return rows

    def differences_table(self) -> str:
        """Markdown: ``a − b`` mean [95 % bootstrap interval] and the verdict, per metric."""
        rows = self.differences()
        if not rows:
            return ""
        pairs = list(dict.fromkeys(r["pair"] for r in rows))
        cols = self.columns
        lines = ["| Difference | " + " | ".join(_md(COLUMNS[c].label) for c in cols) + " |",
                 "|---" * (len(cols) + 1) + "|"]
        for p in pairs:
            cells = []
            for c in cols:
                r = next(r for r in rows if r["pair"] == p and r["column"] == c)
                f = COLUMNS[c].fmt
                lo, hi = r["ci"]
                word = {"no clear difference": "n.s.", "too few images": "n/a"}.get(r["verdict"],
                                                                                   r["verdict"].split()[-1])
                cells.append(f"{r['mean']:+{f}} [{lo:+{f}}, {hi:+{f}}] {word} ({r['wins']}/{r['n']})")
            lines.append(f"| {METHODS[p[0]].label} − {METHODS[p[1]].label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def report(self) -> str:
        """The whole Markdown report: setup, the two tables, the legend."""
        s = self.settings
        images = ", ".join(f"{n} → {t} ({tn})" for n, t, tn in zip(self.image_names, self.targets, self.target_names))
        parts = [f"# Faithfulness evaluation: {self.model_name}", ""]
        if self.command:
            parts += [f"Command: `{self.command}`", ""]
        parts += [
            f"Images and target classes (n = {len(self.targets)}): {images}.", "",
            f"Pullback temperature {s.temperature:g}; ascent {s.ascent_steps} steps of {s.alpha:g} "
            f"(eps {s.eps}); IG {s.ig_steps} steps from {s.baseline:g} (grey); SmoothGrad {s.smoothgrad_samples} "
            f"samples, sigma {s.smoothgrad_sigma:g}; randomisation over {len(self.stages) - 1 if self.stages else 0} "
            f"blocks; patches {s.patch}×{s.patch} set to {s.baseline:g}; seed {s.seed}.", "",
            "## Scores (mean ± standard error over images)", "", self.table(), "",
        ]
        diff = self.differences_table()
        if diff:
            parts += ["## Paired differences (per image; mean [bootstrap 95 % interval], "
                      "verdict, images where the first method is better)", "", diff, "",
                      "n.s.: the interval contains 0; n/a: fewer than 2 images. With few images the "
                      "bootstrap interval is coarse.", ""]
        parts += ["## Columns", ""]
        parts += [f"- **{COLUMNS[c].label}** ({COLUMNS[c].better} is better): "
                  f"{COLUMNS[c].description.format(**asdict(s))}." for c in self.columns]
        if self.stages:
            parts += ["", "Randomisation stages (cascading, top first): " + " → ".join(self.stages) + "."]
        if self.seconds:
            parts += ["", "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()) + "."]
        return "\n".join(parts) + "\n"

    def to_dict(self) -> dict:
        def arr(v):
            return [None if not math.isfinite(x) else float(x) for x in np.asarray(v, dtype=float).ravel()]

        return dict(
            model=self.model_name, methods=self.methods, metrics=self.metrics, images=self.image_names,
            targets=self.targets, target_names=self.target_names, settings=asdict(self.settings),
            scores={c: {m: arr(v) for m, v in d.items()} for c, d in self.scores.items()},
            randomisation={m: [arr(r) for r in v] for m, v in self.randomisation.items()},
            stages=self.stages, region_curves={m: [arr(r) for r in v] for m, v in self.curves.items()},
            differences=[dict(r, pair=list(r["pair"]), ci=list(r["ci"])) for r in self.differences()],
            seconds=self.seconds, command=self.command,
        )

    def plot_randomisation(self, path: str | Path) -> Path | None:
        """The randomisation curves: mean ± standard error of Spearman ρ per cascade stage."""
        if not self.randomisation:
            return None
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
        xs = np.arange(len(self.stages))
        for m in self.methods:
            r = self.randomisation[m]
            mean = np.nanmean(r, axis=0)
            se = np.nanstd(r, axis=0, ddof=1) / math.sqrt(r.shape[0]) if r.shape[0] > 1 else np.zeros_like(mean)
            style = "-" if m.startswith("pullback") else "--"
            ax.errorbar(xs, mean, yerr=se, label=METHODS[m].label, ls=style, marker="o", ms=4, capsize=2)
        ax.set_xticks(xs, ["original"] + [f"+ {s}" for s in self.stages[1:]], rotation=25, ha="right")
        ax.set_ylabel("Spearman ρ of |attribution| vs original")
        ax.set_title(f"Cascading randomisation, {self.model_name} (n = {len(self.targets)}; lower = more sensitive)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylim(-0.2, 1.05)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``evaluation.md``, ``results.json`` and ``randomisation.png`` under ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"report": out / "evaluation.md", "json": out / "results.json"}
        paths["report"].write_text(self.report(), encoding="utf-8")
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
        fig = self.plot_randomisation(out / "randomisation.png")
        if fig is not None:
            paths["figure"] = fig
        return paths


# --------------------------------------------------------------------------- the evaluation


def _unknown(what: str, name: str, allowed) -> str:
    close = difflib.get_close_matches(str(name), list(allowed), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; choose from {', '.join(allowed)}"


def _check_names(names: Sequence[str] | None, allowed: dict, what: str) -> list[str]:
    if names is None:
        return list(allowed)
    out = []
    for n in names:
        if n not in allowed:
            raise ValueError(_unknown(what, n, allowed))
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError(f"no {what}s chosen")
    return out


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
    from . import metrics as M

    methods = _check_names(methods, METHODS, "method")
    metric_names = _check_names(metrics, METRICS, "metric")
    check_model(model)
    check_inputs(inputs)
    s = settings
    dev = _device_of(model)
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

    blocks = M.randomisation_blocks(model, s.blocks) if "randomisation" in metric_names else []
    bw = {m: 3 * n * METHODS[m].backward_passes(s) for m in methods}  # 3 units per image backward
    total = sum(bw.values()) * (1 + len(blocks) + ("random_logit" in metric_names))
    total += n * (s.fc_runs + 1) if "faithfulness_correlation" in metric_names else 0
    total += len(methods) * n * s.infidelity_samples if "infidelity" in metric_names else 0
    grid = math.ceil(x.shape[-2] / s.patch) * math.ceil(x.shape[-1] / s.patch)
    total += 2 * len(methods) * n * (grid + 1) if "region_perturbation" in metric_names else 0
    forward_batch = 4 * s.batch  # no activations are kept for a backward pass
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
            for block, copy in M.randomised_copies(model, blocks, seed=s.seed):
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
            kw = {f: getattr(s, f) for f in Settings.__dataclass_fields__}
            scores = {}
            for m in methods:
                scores.update(M.random_logit(model, x, t, {m: attributions[m]}, explain_func, num_classes=num_classes,
                                             seed=s.seed, batch=max(n, s.batch),
                                             explain_kwargs={m: dict(kw, reduce="abs")}))
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
                scores.update(M.infidelity(model, x, t, {m: attributions[m]}, patch=s.patch, p=s.infidelity_p,
                                           samples=s.infidelity_samples, baseline=s.baseline, seed=s.seed,
                                           batch=forward_batch))
                bar.step(f"infidelity: {m}", n * s.infidelity_samples)
            result.scores["infidelity"] = scores
            result.seconds["infidelity"] = time.perf_counter() - start

        if "region_perturbation" in metric_names:
            start = time.perf_counter()
            both = dict(attributions, **{f"{m}|abs": a.abs().sum(1, keepdim=True) for m, a in attributions.items()})
            scores, curves = M.region_perturbation(model, x, t, both, patch=s.patch, baseline=s.baseline,
                                                   batch=forward_batch)
            result.curves.update(curves)
            bar.step("region perturbation", 2 * len(methods) * n * (grid + 1))
            result.scores["region_perturbation"] = {m: scores[m] for m in methods}
            result.scores["region_perturbation_abs"] = {m: scores[f"{m}|abs"] for m in methods}
            result.seconds["region_perturbation"] = time.perf_counter() - start
    finally:
        bar.close()
    return result


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pullbacks evaluate``."""
    s = Settings()
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="a registered model name (default: %(default)s, works offline)")
    parser.add_argument("--weights", default="default",
                        help="'default' (pretrained), 'random', or a state_dict file (default: %(default)s)")
    parser.add_argument("--images", nargs="+", default=["builtin"], metavar="IMAGES",
                        help="'builtin' (the scikit-image photos and their classes, offline), 'imagenette' "
                             "(the paper's five rows), or image files / a folder (target: the predicted class)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help=f"any of {', '.join(METHODS)} (default: all; commas also separate)")
    parser.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                        help=f"any of {', '.join(METRICS)} (default: all; commas also separate)")
    parser.add_argument("--out", default="media/evaluation",
                        help="output folder for evaluation.md, results.json, randomisation.png (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: %(default)s)")
    parser.add_argument("--batch", type=positive_int, default=s.batch,
                        help="images per forward/backward pass (default: %(default)s)")
    parser.add_argument("--temperature", type=positive_float, default=None,
                        help="pullback temperature (default: the model's recommended one)")
    parser.add_argument("--blocks", type=positive_int, default=s.blocks,
                        help="layer blocks in the randomisation cascade (default: %(default)s)")
    parser.add_argument("--ig-steps", type=positive_int, default=s.ig_steps,
                        help="Integrated Gradients steps (default: %(default)s)")
    parser.add_argument("--smoothgrad-samples", type=positive_int, default=s.smoothgrad_samples,
                        help="SmoothGrad noise samples (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _split(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    out = [v.strip() for text in values for v in text.split(",") if v.strip()]
    return None if out == ["all"] else out


def run(args: argparse.Namespace) -> int:
    """``pullbacks evaluate``: evaluate, write the report, table and figure; print the tables."""
    try:
        import captum  # noqa: F401
        import quantus  # noqa: F401
    except ImportError as e:
        print(f"pullbacks evaluate: error: {e}; install the extras: pip install 'pullbacks[evaluate]' "
              "(captum, quantus==0.6.0)", file=sys.stderr)
        return 2
    from .images import builtin_photos, imagenette_rows, load_images
    from .models import load_model

    methods, metric_names = _split(args.methods), _split(args.metrics)
    _check_names(methods, METHODS, "method")  # fail before loading anything
    _check_names(metric_names, METRICS, "metric")
    weights = None if args.weights == "random" else args.weights
    loaded = load_model(args.model, weights=weights, device=args.device)
    temperature = args.temperature or loaded.temperature
    if args.images == ["builtin"]:
        photos = builtin_photos()
    elif args.images == ["imagenette"]:
        photos = imagenette_rows()
    else:
        photos = None
    if photos is not None:
        images, labels, names = torch.stack([p.image for p in photos]), [p.label for p in photos], [p.name for p in photos]
    else:
        images, names = load_images(args.images[0] if len(args.images) == 1 else args.images)
        with torch.no_grad():
            labels = loaded.model(images.to(loaded.device)).argmax(1).tolist()
        print("targets: the model's predicted classes (files carry no labels)")
    settings = Settings(temperature=temperature, pool_temperature=loaded.pool_temperature, blocks=args.blocks,
                        ig_steps=args.ig_steps, smoothgrad_samples=args.smoothgrad_samples, batch=args.batch,
                        seed=args.seed)
    result = evaluate(loaded.model, images.to(loaded.device), labels, methods=methods, metrics=metric_names,
                      settings=settings, names=names, classes=loaded.classes, model_name=loaded.name,
                      progress=not args.no_progress)
    result.command = "pullbacks " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if Path(sys.argv[0]).name in ("pullbacks", "__main__.py") else None
    paths = result.save(args.out)
    print(result.table())
    diff = result.differences_table()
    if diff:
        print()
        print(diff)
    print()
    for p in paths.values():
        print(p)
    return 0
