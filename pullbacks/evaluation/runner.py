"""An evaluation over a dataset that never loses finished work, on one process or many.

    records = run(loaded, items, methods=..., metrics=..., settings=..., out="out/evaluation")

* **Shards**: under ``torchrun`` (``WORLD_SIZE`` > 1) each process joins the process group
  (gloo on CPU, NCCL on CUDA) and takes every ``world``-th image from its rank on.
* **Records**: each finished batch's per-image scores are appended at once to
  ``OUT/records/rank-<r>.jsonl``, one JSON object per line (``image``, ``method``,
  ``metric``, ``value``, ``label``); a killed run loses at most the batch in flight, and the
  same command run again skips what is done.
* **Numbers** do not depend on the number of processes, the batch size or the order: every
  image is scored on its own, every random draw seeded from the run's seed and the image's
  name (``data.image_seed``).
* **Settings**: ``OUT/run.json`` holds what fixes the numbers; a run whose settings differ
  refuses to mix its records with those, naming the difference.
* **Merge**: when every image is done, rank 0 writes ``OUT/records.jsonl.gz`` (sorted, each
  (image, method, metric) once) and the report (``evaluation.md``, ``results.json``,
  ``randomisation.png``) built from the records.
* **Focus** runs on 2×2 mosaics of 112-pixel tiles made from the same images (``mosaics``):
  one target image in two tiles, two images of other classes, placed by the seed.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import os
import random
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..core.checks import check_model
from ..core.randomness import check_deterministic
from ..images import ImageLoadError
from ..sources import Item
from .data import Images, image_seed, shard
from .evaluate import METRICS, MOSAICS, evaluate
from .methods import Settings, attribute
from .report import Evaluation
from .suite import focus

if TYPE_CHECKING:
    from ..models.load import LoadedModel

(FOCUS,) = MOSAICS  # the one metric on mosaics


# --------------------------------------------------------------------------- processes


def process_group() -> tuple[int, int]:
    """(rank, world): joins ``torchrun``'s process group when there is one to join."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def rank_device(device: str) -> str:
    """Under ``torchrun`` each rank on its own GPU (``cuda:<LOCAL_RANK>``)."""
    if str(device).startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


# --------------------------------------------------------------------------- mosaics


@dataclasses.dataclass(frozen=True)
class Mosaic:
    """A 2×2 mosaic: the names of its four tiles (row-major), its target class and which
    tiles show it."""

    name: str
    tiles: tuple[str, str, str, str]
    label: int
    target: tuple[bool, bool, bool, bool]


def mosaics(items: Sequence[Item], count: int, seed: int) -> list[Mosaic]:
    """``count`` mosaics from the labelled ``items``, as the follow-up builds them: one target
    image shown in two tiles, and in the other two an image each of a class other than the
    target's (the classes drawn with replacement), placed at random; deterministic from ``seed``."""
    labelled = [(it, it.label) for it in items if it.label is not None]
    by_class: dict[int, list[str]] = {}
    for it, label in labelled:
        by_class.setdefault(label, []).append(it.name)
    if len(by_class) < 2:
        raise ValueError(
            f"Focus mosaics need labelled images of at least 2 classes, got {len(by_class)}; "
            "use labelled images (an ImageNet-layout folder) or leave focus out of --metrics"
        )
    classes = sorted(by_class)
    out = []
    for k in range(count):
        rng = random.Random(image_seed(seed, f"mosaic/{k}"))
        target, label = rng.choice(labelled)
        others = [rng.choice(by_class[rng.choice([c for c in classes if c != label])]) for _ in range(2)]
        slots = rng.sample(range(4), 4)
        tiles, is_target = [""] * 4, [False] * 4
        for slot, name, mark in zip(slots, [target.name, target.name] + others, (True, True, False, False)):
            tiles[slot], is_target[slot] = name, mark
        out.append(
            Mosaic(
                f"mosaic/{k}",
                (tiles[0], tiles[1], tiles[2], tiles[3]),
                label,
                (is_target[0], is_target[1], is_target[2], is_target[3]),
            )
        )
    return out


def mosaic_image(m: Mosaic, images: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mosaic: each tile its image at half size (bilinear, antialiased), row-major."""
    h, w = next(iter(images.values())).shape[-2:]
    small = [
        F.interpolate(images[name][None], size=(h // 2, w // 2), mode="bilinear", antialias=True, align_corners=False)[
            0
        ]
        for name in m.tiles
    ]
    return torch.cat([torch.cat(small[:2], dim=2), torch.cat(small[2:], dim=2)], dim=1)


# --------------------------------------------------------------------------- records


class OutputError(RuntimeError):
    """The output folder cannot be written (or read); the message names the path and the fix."""


_FIXES = {
    errno.ENOSPC: "free some disk space, then run the same command again: the finished records are kept",
    errno.EDQUOT: "free some disk space, then run the same command again: the finished records are kept",
    errno.EROFS: "the file system is read-only: pass another --out",
    errno.EACCES: "make it writable (chmod u+w) or pass another --out",
    errno.EPERM: "make it writable (chmod u+w) or pass another --out",
    errno.ENOENT: "the folder vanished while the run wrote to it: run the same command again",
}


def output_error(e: OSError, out: str | os.PathLike) -> OutputError:
    """An :class:`OutputError` for the I/O error ``e`` met while writing under ``out``."""
    path = e.filename or out
    fix = _FIXES.get(e.errno or 0, "check the folder, or pass another --out")
    return OutputError(f"cannot write {path} ({e.strerror or e}): {fix}")


RECORDS = "records.jsonl.gz"  # the merged records, gzip-compressed (a committed run stays small)


def read_lines(path: Path) -> list[str]:
    """The lines of a JSON-lines file, plain (``.jsonl``) or gzip-compressed (``.jsonl.gz``)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read().splitlines()
    return path.read_text(encoding="utf-8").splitlines()


def read_records(path: Path) -> list[dict]:
    """The records of a merged file (``OUT/records.jsonl.gz``, or an older ``records.jsonl``)."""
    return [json.loads(line) for line in read_lines(path) if line]


def pack(out: str | os.PathLike) -> list[Path]:
    """Compress a stopped run's records for committing: each rank's records (its plain file and
    any packed one) into ``OUT/records/rank-<r>.jsonl.gz``, the plain file removed. Run it while
    no run writes to ``out``; the same command resumes from the packed files."""
    folder = Path(out) / "records"
    packed = []
    ranks = sorted({p.name.split(".")[0] for p in folder.glob("rank-*.jsonl*")})
    for rank in ranks:
        plain, gz = folder / f"{rank}.jsonl", folder / f"{rank}.jsonl.gz"
        lines = [line for p in (gz, plain) if p.exists() for line in read_lines(p) if line.strip()]
        kept = []
        for line in lines:
            try:
                json.loads(line)
                kept.append(line)
            except json.JSONDecodeError:  # a torn last line: computed again on resuming
                continue
        text = "".join(line + "\n" for line in kept)
        tmp = gz.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
        tmp.replace(gz)
        plain.unlink(missing_ok=True)
        packed.append(gz)
    return packed


def _read_records(folder: Path) -> list[dict]:
    """The records of every rank's file, plain or compressed (``gzip -n rank-0.jsonl`` packs a
    partial run for committing; the run appends to a fresh plain file and reads both)."""
    records = []
    for path in sorted([*folder.glob("rank-*.jsonl"), *folder.glob("rank-*.jsonl.gz")]):
        for line in read_lines(path):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a torn line another rank has not cut off yet
                continue
    return records


def _cut_torn_tail(path: Path) -> None:
    """Whole lines only: a last line without its newline (a run killed while writing it) is cut
    off before anything is appended, with a warning; its records are computed again."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(
        f"{path}: cut off a torn last line ({len(data) - keep} bytes, from a run killed while writing "
        "it); its records are computed again",
        stacklevel=2,
    )


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` for the run: a second run on the same --out is refused at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform
        yield
        return
    f = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise OutputError(
                f"another run (pid {holder}) is writing to {path.parent}; wait for it to finish, or pass another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
        path.unlink(missing_ok=True)  # a finished run leaves no lock file behind
    finally:
        f.close()  # closing releases the lock


def _append(path: Path, records: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _check_spec(out: Path, spec: dict, rank: int, world: int) -> None:
    """``OUT/run.json`` is this run's settings, or the run refuses to start."""
    path = out / "run.json"
    if rank == 0 and not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec, indent=1, sort_keys=True), encoding="utf-8")
    _barrier(world)
    held = json.loads(path.read_text(encoding="utf-8"))
    if held != spec:
        key = next(k for k in sorted(set(held) | set(spec)) if held.get(k) != spec.get(k))
        raise ValueError(
            f"{out} holds the records of another run ({key}: {held.get(key)!r} there, "
            f"{spec.get(key)!r} now); to keep both pass another --out, or delete {out} to start over"
        )


# --------------------------------------------------------------------------- the run


def run(
    loaded: LoadedModel,
    items: Sequence[Item],
    *,
    methods: Sequence[str],
    metrics: Sequence[str],
    settings: Settings,
    out: str | os.PathLike,
    spec: dict,
    mosaic_count: int = 0,
    workers: int = 0,
    progress: bool = True,
) -> Evaluation | None:
    """Evaluate ``items`` (this process's share), appending records as it goes; when every
    image is done, merge and return the :class:`Evaluation` on rank 0 (None elsewhere)."""
    check_model(loaded.model)
    out = Path(out)
    rank, world = process_group()
    tiles = mosaics(items, mosaic_count, settings.seed) if FOCUS in metrics and mosaic_count else []  # checks first
    try:
        out.mkdir(parents=True, exist_ok=True)
        with _lock(out / f".lock-rank-{rank}"):
            return _run(loaded, items, tiles, methods, metrics, settings, out, spec, workers, progress, rank, world)
    except OSError as e:
        raise output_error(e, out) from None


def _run(
    loaded: LoadedModel,
    items: Sequence[Item],
    tiles: Sequence[Mosaic],
    methods: Sequence[str],
    metrics: Sequence[str],
    settings: Settings,
    out: Path,
    spec: dict,
    workers: int,
    progress: bool,
    rank: int,
    world: int,
) -> Evaluation | None:
    _check_spec(out, spec, rank, world)
    folder = out / "records"
    folder.mkdir(parents=True, exist_ok=True)
    mine_path = folder / f"rank-{rank}.jsonl"
    _cut_torn_tail(mine_path)
    mine_path.open("a", encoding="utf-8").close()  # writable, before any image is scored
    plain = [m for m in metrics if m != FOCUS]
    done = {(r["image"], r["method"], r["metric"]) for r in _read_records(folder)}
    mine = [
        it
        for it in shard(items, rank, world)
        if plain and not all((it.name, m, k) in done for m in methods for k in _first_columns(plain))
    ]
    my_mosaics = [t for t in shard(tiles, rank, world) if not all((t.name, m, FOCUS) in done for m in methods)]
    _score_images(loaded, mine, methods, plain, settings, mine_path, workers, progress, rank)
    _score_mosaics(loaded, my_mosaics, items, methods, settings, mine_path, progress, rank)
    _barrier(world)
    result = merge(out, items, tiles, methods, metrics, loaded, settings) if rank == 0 else None
    _barrier(world)
    return result


def _first_columns(metrics: Sequence[str]) -> list[str]:
    return [METRICS[m].columns[0] for m in metrics]


def _bar(total: int, progress: bool, rank: int, what: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"rank {rank}: {what}" if rank else what,
        unit="image",
        disable=not progress,
        position=rank,
        dynamic_ncols=True,
    )


def _score_images(
    loaded: LoadedModel,
    items: Sequence[Item],
    methods: Sequence[str],
    metrics: Sequence[str],
    settings: Settings,
    path: Path,
    workers: int,
    progress: bool,
    rank: int,
) -> None:
    if not items:
        return
    loader = DataLoader(Images(items), batch_size=settings.batch_size, num_workers=workers)
    with _bar(len(items), progress, rank, "images") as bar:
        for images, labels, index, errors in loader:
            failed = next((e for e in errors if e), None)
            if failed:  # raised here, with its own message (a worker's would be wrapped in a traceback)
                raise ImageLoadError(failed)
            records = []
            for x, label, i in zip(images, labels.tolist(), index.tolist()):
                item = items[i]
                x = x.to(loaded.device)
                if label < 0:  # a file carries no class: explain the model's prediction
                    with torch.no_grad():
                        label = int(loaded.model(x[None]).argmax(1))
                s = dataclasses.replace(settings, seed=image_seed(settings.seed, item.name))
                r = evaluate(
                    loaded.model,
                    x[None],
                    [label],
                    methods=list(methods),
                    metrics=list(metrics),
                    settings=s,
                    names=[item.name],
                    progress=False,
                    masks=None if item.mask is None else item.mask[None],
                )
                records += [
                    {"image": item.name, "method": m, "metric": column, "value": _num(v[0]), "label": label}
                    for column, per_method in r.scores.items()
                    for m, v in per_method.items()
                ]
                for m, stages in (r.randomisation or {}).items():
                    records += [
                        {
                            "image": item.name,
                            "method": m,
                            "metric": f"randomisation_stage/{k}/{stage}",
                            "value": _num(v),
                            "label": label,
                        }
                        for k, (stage, v) in enumerate(zip(r.stages, stages[0]))
                    ]
            _append(path, records)  # the batch is safe on disk
            bar.update(len(labels))


def _score_mosaics(
    loaded: LoadedModel,
    mosaics_: Sequence[Mosaic],
    items: Sequence[Item],
    methods: Sequence[str],
    settings: Settings,
    path: Path,
    progress: bool,
    rank: int,
) -> None:
    if not mosaics_:
        return
    needed = {name for m in mosaics_ for name in m.tiles}
    images = {it.name: it for it in items if it.name in needed}
    loaded_images = {name: Images([it]).image(0) for name, it in images.items()}
    with _bar(len(mosaics_), progress, rank, "mosaics") as bar:
        for m in mosaics_:
            x = mosaic_image(m, loaded_images).to(loaded.device)[None]
            if m is mosaics_[0]:
                check_deterministic(loaded.model, x)
            s = dataclasses.replace(settings, seed=image_seed(settings.seed, m.name))
            attributions = {meth: attribute(loaded.model, x, [m.label], meth, s) for meth in methods}
            scores = focus(attributions, [m.target], x)
            _append(
                path,
                [
                    {"image": m.name, "method": meth, "metric": FOCUS, "value": _num(v[0]), "label": m.label}
                    for meth, v in scores.items()
                ],
            )
            bar.update(1)


def _num(v: Any) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else v


def merge(
    out: Path,
    items: Sequence[Item],
    tiles: Sequence[Mosaic],
    methods: Sequence[str],
    metrics: Sequence[str],
    loaded: LoadedModel,
    settings: Settings,
) -> Evaluation:
    """``OUT/records.jsonl.gz`` (each (image, method, metric) once, sorted) and the report."""
    seen: dict[tuple, dict] = {}
    for r in _read_records(out / "records"):
        seen.setdefault((r["image"], r["method"], r["metric"]), r)
    records = [seen[k] for k in sorted(seen)]
    names = [it.name for it in items]
    wanted = {it.name for it in items} | {t.name for t in tiles}
    records = [r for r in records if r["image"] in wanted and r["method"] in methods]
    _write_records(out / RECORDS, records)
    labels = {r["image"]: r["label"] for r in records}
    result = Evaluation(
        model_name=loaded.name,
        methods=list(methods),
        metrics=list(metrics),
        image_names=names,
        targets=[labels.get(n, -1) for n in names],
        target_names=[loaded.classes[labels[n]] if labels.get(n, -1) >= 0 else "?" for n in names],
        settings=settings,
    )
    by: dict[str, dict[str, dict[str, float]]] = {}
    for r in records:
        by.setdefault(r["metric"], {}).setdefault(r["method"], {})[r["image"]] = r["value"]
    for column, per_method in by.items():
        if column.startswith("randomisation_stage/"):
            continue
        rows = [t.name for t in tiles] if column == FOCUS else names
        result.scores[column] = {
            m: np.array([np.nan if v.get(n) is None else v[n] for n in rows], dtype=float)
            for m, v in per_method.items()
        }
    stages = sorted(
        {tuple(r["metric"].split("/")[1:]) for r in records if r["metric"].startswith("randomisation_stage/")},
        key=lambda s: int(s[0]),
    )
    if stages:
        result.stages = [s[1] for s in stages]
        result.randomisation = {
            m: np.array(
                [[by[f"randomisation_stage/{k}/{label}"][m].get(n, np.nan) for k, label in stages] for n in names],
                dtype=float,
            )
            for m in methods
        }
    return result


def _write_records(path: Path, records: list[dict]) -> None:
    """Compressed, byte for byte the same for the same records (no time stamp in the gzip header)."""
    tmp = path.with_suffix(".tmp")
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    tmp.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    tmp.replace(path)
    path.with_name("records.jsonl").unlink(missing_ok=True)  # an older run's plain file
