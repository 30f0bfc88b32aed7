"""Known answers for text: a generated token task whose deciding tokens are known, a tiny
transformer classifier trained on it, and token-level metrics against the answers.

The task. Twelve words drawn from 40 distractors (``w0`` … ``w39``); somewhere a marker
``mark`` is followed by a colour word (``red``, ``green``, ``blue``, ``gold``): that colour is
the class. Another, different colour word stands elsewhere as a decoy, never after the
marker. So the deciding tokens are exactly two, the marker and the colour after it, and a
map that points at "a colour word" rather than *the* colour word is caught by the decoy.

    python -m pullbacks.groundtruth.text train              # 1.5 min on 2 CPU cores; weights in the package
    python -m pullbacks.groundtruth.text evaluate --n 1000  # media/groundtruth/text/

The classifier is a Hugging Face ``DistilBertForSequenceClassification`` (2 layers, width 64,
4 heads, GELU, layer norms, sdpa attention, a ReLU before its head; trained without dropout),
saved with its tokenizer as a
``save_pretrained`` folder, so ``pullbacks explain-text --model hf/<that folder>`` reads it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
MARKER = "mark"
COLOURS = ["red", "green", "blue", "gold"]
DISTRACTORS = [f"w{i}" for i in range(40)]
WORDS = SPECIAL + [MARKER] + COLOURS + DISTRACTORS
LENGTH = 12  # words per text, before [CLS] and [SEP]
TRAIN_SEED, HELD_OUT_SEED, EVAL_SEED = 0, 1_000_003, 2_000_003
FOLDER = Path(__file__).parent / "weights" / "text"
IG_STEPS = 32
LR = 3e-3


def sample(seed: int, i: int) -> tuple[str, int, list[int]]:
    """Text ``i`` of ``seed``: (the words, the class, the positions of the deciding words among them)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + i)

    def pick(n: int) -> int:
        return int(torch.randint(n, (1,), generator=g))

    words = [DISTRACTORS[pick(len(DISTRACTORS))] for _ in range(LENGTH)]
    label = pick(len(COLOURS))
    at = pick(LENGTH - 1)
    words[at], words[at + 1] = MARKER, COLOURS[label]
    free = [p for p in range(LENGTH) if p not in (at, at + 1, at + 2)]
    decoy = free[pick(len(free))]
    words[decoy] = COLOURS[(label + 1 + pick(len(COLOURS) - 1)) % len(COLOURS)]
    return " ".join(words), label, [at, at + 1]


def generate(n: int, seed: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``n`` texts of ``seed``: texts, labels (n,), and masks (n, LENGTH + 2) over the tokens
    ``[CLS] words [SEP]`` (True at the two deciding tokens)."""
    texts, labels, masks = [], [], torch.zeros(n, LENGTH + 2, dtype=torch.bool)
    for i in range(n):
        text, label, where = sample(seed, i)
        texts.append(text)
        labels.append(label)
        masks[i, [p + 1 for p in where]] = True
    return texts, torch.tensor(labels), masks


def tokenizer():
    """The task's word-level tokenizer (``[CLS] words [SEP]``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", WORDS.index("[CLS]")), ("[SEP]", WORDS.index("[SEP]"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def build():
    """The classifier, randomly initialised (seeded by the caller)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=len(WORDS),
        dim=64,
        hidden_dim=128,
        n_layers=2,
        n_heads=4,
        dropout=0.0,
        attention_dropout=0.0,
        max_position_embeddings=LENGTH + 2,
        num_labels=len(COLOURS),
        pad_token_id=0,
        id2label=dict(enumerate(COLOURS)),
        label2id={c: i for i, c in enumerate(COLOURS)},
        attn_implementation="sdpa",
    )
    return DistilBertForSequenceClassification(config)


def load(folder: str | os.PathLike = FOLDER):
    """The trained classifier (eval mode) and its tokenizer."""
    from ..models import load_text_model

    return load_text_model(str(folder))


def _ids(tok, texts: list[str]) -> torch.Tensor:
    return torch.tensor([tok(t)["input_ids"] for t in texts])


def train(
    out: str | os.PathLike = FOLDER,
    *,
    n: int = 20000,
    epochs: int = 20,
    batch: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the classifier on ``n`` texts of ``TRAIN_SEED`` and save it with its tokenizer to ``out``."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tok = tokenizer()
    texts, labels, _ = generate(n, TRAIN_SEED)
    ids = _ids(tok, texts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
        steps = epochs * math.ceil(n / batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
        bar = tqdm(total=steps, desc="training the text classifier", disable=not progress)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(n)
            for k in range(0, n, batch):
                j = order[k : k + batch]
                loss = torch.nn.functional.cross_entropy(model(input_ids=ids[j]).logits, labels[j])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
                bar.set_postfix(loss=f"{float(loss):.3f}")
        bar.close()
    model.eval()
    held_texts, held_labels, _ = generate(2000, HELD_OUT_SEED)
    with torch.no_grad():
        acc = float((model(input_ids=_ids(tok, held_texts)).logits.argmax(1) == held_labels).float().mean())
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = {
        "held_out_accuracy": acc,
        "seconds": round(time.perf_counter() - start, 1),
        "texts": n,
        "epochs": epochs,
        "batch": batch,
        "seed": seed,
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


# ----------------------------------------------------------------------------- evaluation


def _integrated(model, e, mask, labels, gates) -> torch.Tensor:
    """Integrated gradients from the zero embedding (midpoint rule): ``e · mean_k g(α_k e)``,
    each ``g`` under ``gates`` (None: vanilla; else Integrated Pullbacks)."""
    from ..text import token_gradient

    total, steps = torch.zeros_like(e), IG_STEPS
    for k in range(steps):
        total += token_gradient(model, e * ((k + 0.5) / steps), mask, labels, gates)
    return (total / steps * e).sum(-1)


def attributions(model, tok, texts: list[str], labels: torch.Tensor, seed: int = EVAL_SEED) -> dict[str, torch.Tensor]:
    """Token scores (N, n) of every method for the true classes."""
    from ..core.options import GateOptions
    from ..text import reduce, token_gradient

    ids = _ids(tok, texts)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        e = model.get_input_embeddings()(ids)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pullbacks.groundtruth.text", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the classifier (weights into the package folder by default)")
    t.add_argument("--out", default=str(FOLDER))
    t.add_argument("--texts", type=int, default=20000)
    t.add_argument("--epochs", type=int, default=20)
    e = sub.add_parser("evaluate", help="the metrics on held-out texts")
    e.add_argument("--out", default="media/groundtruth/text")
    e.add_argument("--n", type=int, default=1000)
    args = p.parse_args(argv)
    if args.command == "train":
        print(json.dumps(train(args.out, n=args.texts, epochs=args.epochs)))
    else:
        print(table(evaluate(args.out, args.n)))
        print(figure(Path(args.out) / "tokens.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
