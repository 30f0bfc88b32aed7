"""Known answers for text: a generated token task whose deciding tokens are known, and a tiny
transformer classifier trained on it (the token-level metrics against the answers are an
experiment above the evaluation: :mod:`pullbacks.experiments.text`).

The task. Twelve words drawn from 40 distractors (``w0`` … ``w39``); somewhere a marker
``mark`` is followed by a colour word (``red``, ``green``, ``blue``, ``gold``): that colour is
the class. Another, different colour word stands elsewhere as a decoy, never after the
marker. So the deciding tokens are exactly two, the marker and the colour after it, and a
map that points at "a colour word" rather than *the* colour word is caught by the decoy.

    python -m pullbacks.groundtruth.text train              # 1.5 min on 2 CPU cores; weights in the package
    python -m pullbacks.experiments.text --n 1000           # the metrics: media/groundtruth/text/

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
from typing import Any

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
MARKER = "mark"
COLOURS = ["red", "green", "blue", "gold"]
DISTRACTORS = [f"w{i}" for i in range(40)]
WORDS = SPECIAL + [MARKER] + COLOURS + DISTRACTORS
LENGTH = 12  # words per text, before [CLS] and [SEP]
TRAIN_SEED, HELD_OUT_SEED, EVAL_SEED = 0, 1_000_003, 2_000_003
FOLDER = Path(__file__).parent / "weights" / "text"
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


def tokenizer() -> Any:
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


def build() -> Any:
    """The classifier, randomly initialised (seeded by the caller)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(  # type: ignore[call-arg]  # its keywords reach PretrainedConfig
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


def _ids(tok: Any, texts: list[str]) -> torch.Tensor:
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pullbacks.groundtruth.text", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the classifier (weights into the package folder by default)")
    t.add_argument("--out", default=str(FOLDER))
    t.add_argument("--texts", type=int, default=20000)
    t.add_argument("--epochs", type=int, default=20)
    args = p.parse_args(argv)
    print(json.dumps(train(args.out, n=args.texts, epochs=args.epochs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
