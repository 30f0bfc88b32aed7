"""The result of an evaluation: per-image scores, the Markdown report, JSON and a figure."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .methods import METHODS, Settings
from .metrics import bootstrap_ci, mean_se


def _fields(s: Settings) -> dict:
    """The settings as the descriptions name them (a tuple of sizes reads "112 and 56")."""
    out = {k: " and ".join(map(str, v)) if isinstance(v, (tuple, list)) else v for k, v in asdict(s).items()}
    out["infidelity_loop"] = (
        "each earlier patch of the draw kept replaced (the follow-up's loop)"
        if s.infidelity_cumulative
        else "one patch at a time (ours, not the follow-up's)"
    )
    out["mc_output"] = "softmax probability (the follow-up's)" if s.mc_softmax else "logit (ours, not the follow-up's)"
    return out


@dataclass(frozen=True)
class Column:
    label: str
    better: str  # "lower" or "higher"
    fmt: str
    description: str


EDGE = "edge"  # the baseline every method must beat


COLUMNS: dict[str, Column] = {
    "randomisation_top": Column(
        "Randomisation, top layer", "lower", ".2f", "Spearman ρ of |a| before vs after re-initialising the logit layer"
    ),
    "randomisation_mean": Column(
        "Randomisation, cascade mean",
        "lower",
        ".2f",
        "Spearman ρ of |a| vs the original, averaged over the {blocks} cascade stages; ours",
    ),
    "random_logit": Column(
        "Random logit",
        "lower",
        ".3f",
        "Pearson r, over every entry, of a for the true class vs a for a random other class, drawn per image "
        "from the run's seed (Quantus RandomLogit with correlation_pearson; the follow-up's)",
    ),
    "faithfulness_correlation": Column(
        "Faithfulness corr.",
        "higher",
        ".3f",
        "Pearson r, over every {patch}×{patch} patch, of its Σ |a| (all channels) vs the logit drop when it "
        "alone is set to {baseline:g} (the follow-up's)",
    ),
    "infidelity": Column(
        "Infidelity",
        "lower",
        ".3g",
        "mean (β⟨a, I⟩ − (f(x) − f(x − I)))², I: every patch of {infidelity_patches} px replaced in turn by "
        "one uniform value in [-1, 1], {infidelity_loop}, {infidelity_draws} draws, β fitted per image "
        "(optimal scaling); unit logit²",
    ),
    "region_perturbation": Column(
        "Region pert. AOPC",
        "higher",
        ".2f",
        "mean logit drop as {patch}×{patch} patches are set to {baseline:g} one by one, largest signed "
        "attribution sum first (Quantus RegionPerturbation, all patches)",
    ),
    "region_perturbation_abs": Column(
        "Region pert. AOPC, |a|", "higher", ".2f", "the same, ranking the patches by Σ_c |a_c|"
    ),
    "faithfulness_estimate": Column(
        "Faithfulness est.",
        "higher",
        ".3f",
        "Pearson r of the chunk's Σ |a| vs the logit drop when the chunk alone is set to {baseline:g}, chunks of "
        "{fe_features} entries (all channels) in descending |a| (Quantus FaithfulnessEstimate; the follow-up's)",
    ),
    "monotonicity_correlation": Column(
        "Monotonicity corr.",
        "higher",
        ".3f",
        "Spearman ρ of the chunk's Σ |a| vs the mean squared change of the target's {mc_output}, divided by "
        "its square, over {mc_samples} draws of the chunk alone set to one uniform value in [-1, 1], chunks of "
        "{fe_features} entries in ascending |a| (Quantus MonotonicityCorrelation)",
    ),
    "max_sensitivity": Column(
        "Max-sensitivity",
        "lower",
        ".3f",
        "the largest ‖a(x + u) − a(x)‖ / ‖a(x)‖ over every entry, {ms_samples} draws of u uniform in "
        "±{ms_radius:g} per entry (Quantus MaxSensitivity; the follow-up's)",
    ),
    "relevance_mass_accuracy": Column(
        "Mass accuracy",
        "higher",
        ".3f",
        "the share of positive relevance h⁺ = max(Σ_c a_c, 0) on the pixels that decide the class (Quantus "
        "RelevanceMassAccuracy given h⁺)",
    ),
    "relevance_rank_accuracy": Column(
        "Rank accuracy",
        "higher",
        ".3f",
        "the share of the deciding pixels among the K pixels of largest Σ_c a_c, K their number (Quantus "
        "RelevanceRankAccuracy)",
    ),
    "pointing_game": Column(
        "Pointing game", "higher", ".3f", "1 if the pixel of largest Σ_c a_c is a deciding pixel (Quantus PointingGame)"
    ),
    "focus": Column(
        "Focus",
        "higher",
        ".3f",
        "share of the positive relevance max(x ⊙ a, 0) in the target's two tiles of a 2×2 mosaic (the same "
        "target image twice; Quantus Focus on the input-attribution product, the follow-up's)",
    ),
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

    def pairs(self) -> list[tuple[str, str]]:
        """The pairs compared: each method with the one it ``pairs_with`` (``METHODS``), then every
        method against the edge
        detector when it ran (a map that does not beat it shows contrast, not evidence)."""
        pairs = [(a, b) for a in METHODS if a in self.methods and (b := METHODS[a].pairs_with) in self.methods]
        if EDGE in self.methods:
            pairs += [(m, EDGE) for m in self.methods if not METHODS[m].ignores_model]
        return pairs

    def below_edge(self, method: str, column: str) -> bool:
        """True if ``method`` is not better than the edge detector on ``column`` (its paired
        bootstrap 95 % interval does not lie wholly on the better side)."""
        if EDGE not in self.methods or METHODS[method].ignores_model:
            return False
        d = self.scores[column][method] - self.scores[column][EDGE]
        lo, hi = bootstrap_ci(d, seed=self.settings.seed)
        return not (lo > 0 if COLUMNS[column].better == "higher" else hi < 0)

    def table(self) -> str:
        """Markdown: mean ± standard error over the images, one row per method; † marks a
        score not better than the edge detector's (when it ran)."""

        cols = self.columns
        arrow = {"lower": "↓", "higher": "↑"}
        head = "| Method | " + " | ".join(_md(f"{COLUMNS[c].label} {arrow[COLUMNS[c].better]}") for c in cols) + " |"
        lines = [head, "|---" * (len(cols) + 1) + "|"]
        for m in self.methods:
            cells = []
            for c in cols:
                mean, se = mean_se(self.scores[c][m])
                f = COLUMNS[c].fmt
                mark = " †" if self.below_edge(m, c) else ""
                cells.append((f"{mean:{f}} ± {se:{f}}" if math.isfinite(se) else f"{mean:{f}}") + mark)
            lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def differences(self) -> list[dict]:
        """Paired differences (per image) of each pair of :meth:`pairs`, with a bootstrap 95 % interval."""

        rows = []
        for a, b in self.pairs():
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
                rows.append(
                    dict(
                        pair=(a, b),
                        column=c,
                        mean=mean,
                        ci=(lo, hi),
                        verdict=verdict,
                        wins=int((sign * finite > 0).sum()),
                        n=int(finite.size),
                    )
                )
        return rows

    def differences_table(self) -> str:
        """Markdown: ``a − b`` mean [95 % bootstrap interval] and the verdict, per metric."""
        rows = self.differences()
        if not rows:
            return ""
        pairs = list(dict.fromkeys(r["pair"] for r in rows))
        cols = self.columns
        lines = [
            "| Difference | " + " | ".join(_md(COLUMNS[c].label) for c in cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for p in pairs:
            cells = []
            for c in cols:
                r = next(r for r in rows if r["pair"] == p and r["column"] == c)
                f = COLUMNS[c].fmt
                lo, hi = r["ci"]
                word = {"no clear difference": "n.s.", "too few images": "n/a"}.get(
                    r["verdict"], r["verdict"].split()[-1]
                )
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
            f"Images and target classes (n = {len(self.targets)}): {images}.",
            "",
            f"Pullback temperature {s.ascent.temperature:g}; ascent {s.ascent.steps} steps of {s.ascent.alpha:g} "
            f"(eps {s.ascent.eps}); IG {s.ig_steps} steps from {s.baseline:g} (grey); "
            f"SmoothGrad {s.smoothgrad_samples} "
            f"samples, sigma {s.smoothgrad_sigma:g}; randomisation over {len(self.stages) - 1 if self.stages else 0} "
            f"blocks; patches {s.patch}×{s.patch} set to {s.baseline:g}; seed {s.seed}.",
            "",
            "## Scores (mean ± standard error over images)",
            "",
            self.table(),
            "",
        ]
        if EDGE in self.methods:
            parts += [
                "†: not better than the edge detector (the Sobel magnitude of the image, which ignores the "
                "model), by the paired bootstrap 95 % interval.",
                "",
            ]
        diff = self.differences_table()
        if diff:
            parts += [
                "## Paired differences (per image; mean [bootstrap 95 % interval], "
                "verdict, images where the first method is better)",
                "",
                diff,
                "",
                "n.s.: the interval contains 0; n/a: fewer than 2 images. With few images the "
                "bootstrap interval is coarse.",
                "",
            ]
        parts += ["## Columns", ""]
        parts += [
            f"- **{COLUMNS[c].label}** ({COLUMNS[c].better} is better): {COLUMNS[c].description.format(**_fields(s))}."
            for c in self.columns
        ]
        if self.stages:
            parts += ["", "Randomisation stages (cascading, top first): " + " → ".join(self.stages) + "."]
        if self.seconds:
            parts += ["", "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()) + "."]
        return "\n".join(parts) + "\n"

    def to_dict(self) -> dict:
        def arr(v: Any) -> list[float | None]:
            return [None if not math.isfinite(x) else float(x) for x in np.asarray(v, dtype=float).ravel()]

        return dict(
            model=self.model_name,
            methods=self.methods,
            metrics=self.metrics,
            images=self.image_names,
            targets=self.targets,
            target_names=self.target_names,
            settings=asdict(self.settings),
            scores={c: {m: arr(v) for m, v in d.items()} for c, d in self.scores.items()},
            randomisation={m: [arr(r) for r in v] for m, v in self.randomisation.items()},
            stages=self.stages,
            region_curves={m: [arr(r) for r in v] for m, v in self.curves.items()},
            differences=[dict(r, pair=list(r["pair"]), ci=list(r["ci"])) for r in self.differences()],
            seconds=self.seconds,
            command=self.command,
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
        colours = plt.get_cmap("tab10" if len(self.methods) <= 10 else "tab20")  # one colour per method
        for i, m in enumerate(self.methods):
            r = self.randomisation[m]
            mean = np.nanmean(r, axis=0)
            se = np.nanstd(r, axis=0, ddof=1) / math.sqrt(r.shape[0]) if r.shape[0] > 1 else np.zeros_like(mean)
            style = "-" if METHODS[m].pairs_with else "--"  # solid: the methods that use the pullback
            ax.errorbar(
                xs,
                mean,
                yerr=se,
                label=METHODS[m].label,
                ls=style,
                marker="o",
                ms=4,
                capsize=2,
                color=colours(i % colours.N),
            )
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
