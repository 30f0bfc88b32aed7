"""Known answers for text, the experiment: the pullback and the other token-level methods
against the two deciding tokens of the generated text task (:mod:`pullbacks.groundtruth.text`),
on the classifier trained there.

    python -m pullbacks.experiments.text --n 1000  # media/groundtruth/text/
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..groundtruth.text import COLOURS, EVAL_SEED, FOLDER, _ids, generate

IG_STEPS = 32  # Integrated Gradients (and Integrated Pullbacks) steps along the embeddings


def load(folder: str | os.PathLike = FOLDER) -> tuple[Any, Any]:
    """The trained classifier (eval mode) and its tokenizer, as the model registry loads it."""
    from ..models import load_text_model

    return load_text_model(str(folder))


def _integrated(
    model: torch.nn.Module, e: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, gates: Any
) -> torch.Tensor:
    """Integrated gradients from the zero embedding (midpoint rule): ``e · mean_k g(α_k e)``,
    each ``g`` under ``gates`` (None: vanilla; else Integrated Pullbacks)."""
    from ..text import token_gradient

    total, steps = torch.zeros_like(e), IG_STEPS
    for k in range(steps):
        total += token_gradient(model, e * ((k + 0.5) / steps), mask, labels, gates)
    return (total / steps * e).sum(-1)


def attributions(
    model: torch.nn.Module, tok: Any, texts: list[str], labels: torch.Tensor, seed: int = EVAL_SEED
) -> dict[str, torch.Tensor]:
    """Token scores (N, n) of every method for the true classes."""
    from ..core.options import GateOptions
    from ..text import reduce, token_gradient

    ids = _ids(tok, texts)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        e = model.get_input_embeddings()(ids)  # type: ignore[operator]  # a Hugging Face model's method
    gates = GateOptions()
    g_pb = token_gradient(model, e, mask, labels, gates)
    g = token_gradient(model, e, mask, labels, None)
    noise = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed), dtype=e.dtype)
    return {
        "pullback": reduce(g_pb, e),
        "pullback_norm": reduce(g_pb, e, "norm"),
        "gradient": reduce(g, e, "norm"),
        "gradient_x_input": reduce(g, e),
        "integrated_gradients": _integrated(model, e, mask, labels, None),
        "integrated_pullbacks": _integrated(model, e, mask, labels, gates),
        "random": noise,
    }


LABELS = {
    "pullback": "Pullback · input (g·e)",
    "pullback_norm": "Pullback norm ‖g‖",
    "gradient": "Gradient norm ‖∇‖",
    "gradient_x_input": "Gradient × input",
    "integrated_gradients": f"Integrated Gradients ({IG_STEPS} steps)",
    "integrated_pullbacks": f"Integrated Pullbacks ({IG_STEPS} steps)",
    "random": "Random (ignores the model)",
}


def evaluate(
    out: str | os.PathLike = "media/groundtruth/text", n: int = 1000, batch: int = 100, progress: bool = True
) -> dict:
    """Relevance mass accuracy and the pointing game of every method on ``n`` held-out texts,
    written to ``out/results.json`` after every batch (a rerun resumes)."""
    from tqdm.auto import tqdm

    from ..evaluation.suite import pointing_game, relevance_mass_accuracy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    done = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if done.get("n") != n:
        done = {"n": n, "scores": {}, "correct": []}
    model, tok = load()
    texts, labels, masks = generate(n, EVAL_SEED)
    start = len(done["correct"])
    for k in tqdm(
        range(start, n, batch),
        desc="text known answers",
        disable=not progress,
        initial=start // batch,
        total=math.ceil(n / batch),
    ):
        sl = slice(k, min(k + batch, n))
        with torch.no_grad():
            pred = model(input_ids=_ids(tok, texts[sl])).logits.argmax(1)
        a = attributions(model, tok, texts[sl], labels[sl], seed=EVAL_SEED + k)
        maps = {m: v[:, None, None, :] for m, v in a.items()}  # (N, 1, 1, n): one "pixel row" per text
        m = masks[sl][:, None, :]
        for metric, fn in (("relevance_mass_accuracy", relevance_mass_accuracy), ("pointing_game", pointing_game)):
            for method, values in fn(maps, m).items():
                done["scores"].setdefault(metric, {}).setdefault(method, []).extend(
                    [None if not np.isfinite(v) else float(v) for v in values]
                )
        done["correct"].extend((pred == labels[sl]).tolist())
        path.with_suffix(".tmp").write_text(json.dumps(done) + "\n", encoding="utf-8")
        os.replace(path.with_suffix(".tmp"), path)
    return done


def table(results: dict, seed: int = 0) -> str:
    """Markdown: mean ± s.e. per method and metric, and the paired 95 % bootstrap interval of
    pullback − method."""
    from ..evaluation.metrics import bootstrap_ci, mean_se

    metrics = list(results["scores"])
    head = " | ".join(f"{m} | pullback − it (95 %)" for m in metrics)
    lines = [f"| Method | {head} |", "|---" * (1 + 2 * len(metrics)) + "|"]
    for method in results["scores"][metrics[0]]:
        cells = []
        for metric in metrics:
            s = {
                k: np.array([np.nan if v is None else v for v in vals], float)
                for k, vals in results["scores"][metric].items()
            }
            mean, se = mean_se(s[method])
            cells.append(f"{mean:.3f} ± {se:.3f}")
            if method == "pullback":
                cells.append("—")
            else:
                lo, hi = bootstrap_ci(s["pullback"] - s[method], seed=seed)
                cells.append(f"[{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(
    out: str | os.PathLike = "media/groundtruth/text/tokens.png",
    n: int = 4,
    methods: tuple[str, ...] = ("pullback", "gradient_x_input", "integrated_gradients", "gradient"),
) -> Path:
    """Held-out texts (rows of blocks) scored by ``methods`` (one line each): red for the true class,
    blue against it, each line scaled to its own largest |score|; the deciding tokens underlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, tok = load()
    texts, labels, masks = generate(n, EVAL_SEED)
    a = attributions(model, tok, texts, labels)
    words = [tok.convert_ids_to_tokens(tok(t)["input_ids"]) for t in texts]
    lines = n * (len(methods) + 1)
    fig = plt.figure(figsize=(13, 0.32 * lines + 0.4))
    y = 1.0
    step = 1.0 / (lines + 0.5)
    for i in range(n):
        y -= step
        fig.text(0.01, y, f"text {i + 1}: class {COLOURS[int(labels[i])]!r}", fontsize=9, weight="bold", va="center")
        for m in methods:
            y -= step
            scores = a[m][i]
            top = float(scores.abs().max()) or 1.0
            fig.text(0.01, y, LABELS[m], fontsize=8, va="center")
            for j, (w, v) in enumerate(zip(words[i], scores.tolist())):
                c = (1, 1 - abs(v) / top, 1 - abs(v) / top) if v >= 0 else (1 - abs(v) / top, 1 - abs(v) / top, 1)
                fig.text(
                    0.27 + j * 0.052,
                    y,
                    w,
                    fontsize=8,
                    va="center",
                    family="monospace",
                    bbox=dict(facecolor=c, edgecolor="black" if masks[i, j] else "none", pad=1.5),
                )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pullbacks.experiments.text", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="media/groundtruth/text")
    p.add_argument("--n", type=int, default=1000)
    args = p.parse_args(argv)
    print(table(evaluate(args.out, args.n)))
    print(figure(Path(args.out) / "tokens.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
