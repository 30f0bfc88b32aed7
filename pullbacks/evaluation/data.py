"""The images an evaluation runs on, each with its true class and a stable name.

* an ImageNet-layout folder, ``root/<wnid>/<file>``: the true label is the wnid's index in
  timm's ImageNet list (the standard 1000-class order); the name is the path relative to
  ``root``;
* ``"builtin"``: the four offline photos; ``"imagenette"``: the paper's five rows;
* image files (the model's prediction labels them: a file carries no class).

``select(items, limit, seed)`` is the follow-up's sampling: the first ``limit`` images of a
shuffling ``DataLoader`` seeded ``seed`` (theirs: 314) over the images in folder order (the
order of torchvision's ``ImageFolder``: classes, then files, sorted). ``shard(items, rank, world)`` gives each process of a
``torchrun`` its share. A :class:`torch.utils.data.Dataset` loads them (with workers).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..images import IMAGE_EXTENSIONS, ImageLoadError, builtin_photos, imagenette_rows, load_image


@dataclass(frozen=True)
class Item:
    """One image of an evaluation: ``name`` (stable: a relative path or a built-in name),
    where it comes from (``path`` or an in-memory ``image``) and its true ``label`` (None:
    to be predicted)."""

    name: str
    label: Optional[int]
    path: Optional[str] = None
    image: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None  # the pixels that decide the class, where known (generated images)


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet wnids in class-id order (timm's list)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def folder_items(root: str | os.PathLike) -> list[Item]:
    """``root/<wnid>/<file>`` (ImageNet layout): every image file, named by its path relative
    to ``root``, labelled by its wnid; files directly in ``root`` are unlabelled."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root} (an ImageNet-layout folder is root/<wnid>/<image>)")
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    items, unknown = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
        rel = path.relative_to(root)
        if len(rel.parts) == 1:
            items.append(Item(rel.as_posix(), None, str(path)))
        elif rel.parts[0] in index:
            items.append(Item(rel.as_posix(), index[rel.parts[0]], str(path)))
        else:
            unknown.append(rel.parts[0])
    if unknown:
        raise ValueError(f"{root}: folder {sorted(set(unknown))[0]!r} is not an ImageNet wnid (such as n01440764); "
                         "the layout is root/<wnid>/<image>, or put unlabelled files directly in root")
    if not items:
        raise FileNotFoundError(f"no image files in {root}")
    return items


GROUNDTRUTH = "groundtruth"
GROUNDTRUTH_SEED = 2_000_003  # images the trained models never saw (training: seed 0; held out: 1_000_003)


def groundtruth_items(text: str) -> list[Item]:
    """``groundtruth[:N[:SEED]]``: N (default 1000) images of the generated task with their masks."""
    from ..groundtruth import generate

    parts = text.split(":")
    try:
        n = int(parts[1]) if len(parts) > 1 and parts[1] else 1000
        seed = int(parts[2]) if len(parts) > 2 else GROUNDTRUTH_SEED
        if n < 1 or len(parts) > 3:
            raise ValueError
    except ValueError:
        raise ValueError(f"--images {text!r}: the generated task is groundtruth, groundtruth:N or groundtruth:N:SEED "
                         "(N images, N >= 1)") from None
    images, labels, masks = generate(n, seed)
    return [Item(f"{GROUNDTRUTH}/{seed}/{i:06d}", int(labels[i]), image=images[i], mask=masks[i]) for i in range(n)]


def source_items(sources: Sequence[str], imagenette_root=None) -> list[Item]:
    """``--images``: ``["builtin"]``, ``["imagenette"]``, ``["groundtruth:N"]``, one folder, or image files."""
    sources = list(sources)
    if len(sources) == 1 and (sources[0] == GROUNDTRUTH or sources[0].startswith(GROUNDTRUTH + ":")):
        return groundtruth_items(sources[0])
    if sources == ["builtin"]:
        return [Item(p.name, p.label, image=p.image) for p in builtin_photos()]
    if sources == ["imagenette"]:
        return [Item(p.name, p.label, image=p.image) for p in imagenette_rows(imagenette_root)]
    if len(sources) == 1 and Path(sources[0]).expanduser().is_dir():
        return folder_items(sources[0])
    return [Item(Path(s).name, None, str(Path(s).expanduser())) for s in sources]


def select(items: Sequence[Item], limit: Optional[int] = None, seed: int = 314, batch: int = 20) -> list[Item]:
    """The first ``limit`` items drawn by the follow-up's loader: a
    ``DataLoader(shuffle=True, batch_size=batch)`` whose ``torch.Generator`` is seeded ``seed``
    (theirs: 314 and 20), over the items in their order (None: all, unshuffled)."""
    items = list(items)
    if limit is None:
        return items
    from torch.utils.data import DataLoader

    loader = DataLoader(range(len(items)), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    picked: list[int] = []
    for indices in loader:
        picked += indices.tolist()
        if len(picked) >= limit:
            break
    return [items[i] for i in picked[:limit]]


def shard(items: Sequence[Item], rank: int, world: int) -> list[Item]:
    """This process's share: every ``world``-th item from ``rank`` on."""
    return list(items)[rank::world]


def image_seed(seed: int, name: str) -> int:
    """The seed of every random draw made for image ``name`` in a run seeded ``seed``: the
    numbers depend on neither the number of processes, nor the batch, nor the order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "big") >> 1  # < 2**31: numpy takes it


class Images(Dataset):
    """The items as ``(image 3×224×224 in [-1, 1], label or -1, index, error)``: ``error`` is
    "" or the message of an image that could not be loaded (its image then zeros), for the
    main process to raise as it is (a worker's exception would reach it wrapped)."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> torch.Tensor:
        """Item ``i``'s image (:class:`~pullbacks.images.ImageLoadError` if it cannot be loaded)."""
        item = self.items[i]
        return item.image if item.image is not None else load_image(item.path)

    def __getitem__(self, i: int):
        label = -1 if self.items[i].label is None else self.items[i].label
        try:
            return self.image(i), label, i, ""
        except (ImageLoadError, OSError) as e:
            return torch.zeros(3, 224, 224), label, i, str(e)
