"""Train the networks of :mod:`.models` on the generated task, reproducibly from a seed,
with a progress bar and checkpoints that a rerun resumes from.

    python -m pullbacks.groundtruth.train resnet --out out/groundtruth

Training images come from ``generate(n, seed)``; the held-out check uses images of another
seed (``HELD_OUT_SEED``) that training never sees. The weights are written as a float32
``state_dict`` (``<family>.pt``) with ``<family>.json`` (accuracy, seconds, settings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .models import ARCHITECTURES
from .task import generate

HELD_OUT_SEED = 1_000_003
TASK_VERSION = "v2"  # in the cache's file names: a changed generator makes new files
LEARNING_RATES = {"resnet": 3e-3, "vgg": 3e-3, "densenet": 3e-3, "vit": 2e-3}
WEIGHT_DECAY = {"resnet": 5e-4, "vgg": 5e-4, "densenet": 5e-4, "vit": 0.05}
EPOCHS = {"resnet": 10, "vgg": 10, "densenet": 10, "vit": 14}


def dataset(n: int, seed: int, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``generate(n, seed)``'s images and labels, cached under ``cache``."""
    path = cache / f"task-{TASK_VERSION}-seed{seed}-n{n}.pt"
    if path.exists():
        images, labels = torch.load(path)
        return images, labels
    images, labels, _ = generate(n, seed)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save((images, labels), path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return images, labels


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    right = sum(
        int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
        for i in range(0, len(labels), batch)
    )
    return right / len(labels)


def train(
    family: str,
    out: str | os.PathLike = "out/groundtruth",
    *,
    seed: int = 0,
    images: int = 16000,
    epochs: int | None = None,
    batch: int = 64,
    held_out: int = 2000,
    progress: bool = True,
) -> dict:
    """Train ``family`` (a key of ``ARCHITECTURES``) and write ``OUT/<family>.pt`` and ``.json``;
    a checkpoint after every epoch (``OUT/<family>.ckpt``) is resumed from when run again.
    ``epochs`` defaults to the family's (``EPOCHS``)."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = EPOCHS[family] if epochs is None else epochs
    torch.manual_seed(seed)
    model = ARCHITECTURES[family]()
    x, y = dataset(images, seed, out / "data")
    xv, yv = dataset(held_out, HELD_OUT_SEED, out / "data")
    steps_per_epoch = math.ceil(len(y) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATES[family], weight_decay=WEIGHT_DECAY[family])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, LEARNING_RATES[family], total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    start_epoch, seconds = 0, 0.0
    ckpt = out / f"{family}.ckpt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, seconds = state["epoch"], state["seconds"]
        torch.set_rng_state(state["rng"])
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        model.train()
        order = torch.randperm(len(y))
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{family} epoch {epoch + 1}/{epochs}",
            disable=not progress,
            dynamic_ncols=True,
        )
        for step in bar:
            idx = order[step * batch : (step + 1) * batch]
            xb = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)  # mirror images keep their class
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        seconds += time.perf_counter() - began
        tmp = ckpt.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "epoch": epoch + 1,
                "seconds": seconds,
                "rng": torch.get_rng_state(),
            },
            tmp,
        )
        os.replace(tmp, ckpt)
    acc = accuracy(model, xv, yv)
    report = {
        "family": family,
        "held_out_accuracy": acc,
        "held_out_images": held_out,
        "held_out_seed": HELD_OUT_SEED,
        "train_images": images,
        "train_seed": seed,
        "epochs": epochs,
        "batch": batch,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    torch.save(
        {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}, out / f"{family}.pt"
    )
    (out / f"{family}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pullbacks.groundtruth.train", description=__doc__.splitlines()[0])
    p.add_argument("families", nargs="+", choices=list(ARCHITECTURES))
    p.add_argument("--out", default="out/groundtruth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=16000)
    p.add_argument("--epochs", type=int, default=None, help="default: the family's (resnet/vgg/densenet 10, vit 14)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for family in args.families:
        report = train(
            family,
            args.out,
            seed=args.seed,
            images=args.images,
            epochs=args.epochs,
            batch=args.batch,
            progress=not args.no_progress,
        )
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
