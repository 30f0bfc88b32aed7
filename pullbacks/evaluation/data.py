"""The images an evaluation runs on (resolved by :mod:`pullbacks.sources`), sampled and shared out.

``select(items, limit, seed)`` is the follow-up's sampling: the first ``limit`` images of a
shuffling ``DataLoader`` seeded ``seed`` (theirs: 314) over the images in folder order (the
order of torchvision's ``ImageFolder``: classes, then files, sorted).
``shard(items, rank, world)`` gives each process of a
``torchrun`` its share. A :class:`torch.utils.data.Dataset` loads them (with workers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch.utils.data import Dataset

from ..images import ImageLoadError
from ..sources import Item, load


def select(items: Sequence[Item], limit: int | None = None, seed: int = 314, batch: int = 20) -> list[Item]:
    """The first ``limit`` items drawn by the follow-up's loader: a
    ``DataLoader(shuffle=True, batch_size=batch)`` whose ``torch.Generator`` is seeded ``seed``
    (theirs: 314 and 20), over the items in their order (None: all, unshuffled)."""
    items = list(items)
    if limit is None:
        return items
    from torch.utils.data import DataLoader

    loader: DataLoader = DataLoader(
        range(len(items)),  # type: ignore[arg-type]  # a sequence serves as a map-style dataset
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    picked: list[int] = []
    for indices in loader:
        picked += indices.tolist()
        if len(picked) >= limit:
            break
    return [items[i] for i in picked[:limit]]


T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
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
        return load(self.items[i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, str]:
        label = self.items[i].label
        label = -1 if label is None else label
        try:
            return self.image(i), label, i, ""
        except (ImageLoadError, OSError) as e:
            return torch.zeros(3, 224, 224), label, i, str(e)
