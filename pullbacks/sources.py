"""Where images come from, resolved in one place for every front end (command line, app,
explorer, notebook, evaluation): each source becomes a list of :class:`Item` (a stable name, the
true class where known, the image or its path, and the deciding pixels of a generated image).

* ``"builtin"``: the four offline photos; ``"imagenette"``: the paper's five rows;
* ``"groundtruth[:N[:SEED]]"``: N images of the generated task with their masks;
* an ImageNet-layout folder, ``root/<wnid>/<file>``: the true label is the wnid's index in
  timm's ImageNet list (the standard 1000-class order); the name is the path relative to ``root``;
* image files (the model's prediction labels them: a file carries no class).

``find(key)`` resolves one image by key (``"builtin:chelsea"``, ``"imagenette:tench"``, a path).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .images import IMAGE_EXTENSIONS, builtin_photos, imagenette_rows, load_image


@dataclass(frozen=True)
class Item:
    """One image of an evaluation: ``name`` (stable: a relative path or a built-in name),
    where it comes from (``path`` or an in-memory ``image``) and its true ``label`` (None:
    to be predicted)."""

    name: str
    label: int | None
    path: str | None = None
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # the pixels that decide the class, where known (generated images)
    classes: int = 1000  # the size of the label's class list: ImageNet's, or the generated task's

    def label_for(self, n_classes: int) -> int | None:
        """The true label for a model of ``n_classes`` classes: None when the label belongs to
        another class list (an ImageNet photo shown to the generated task's network)."""
        return self.label if self.classes == n_classes else None


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
        raise ValueError(
            f"{root}: folder {sorted(set(unknown))[0]!r} is not an ImageNet wnid (such as n01440764); "
            "the layout is root/<wnid>/<image>, or put unlabelled files directly in root"
        )
    if not items:
        raise FileNotFoundError(f"no image files in {root}")
    return items


GROUNDTRUTH = "groundtruth"
GROUNDTRUTH_SEED = 2_000_003  # images the trained models never saw (training: seed 0; held out: 1_000_003)


def groundtruth_items(text: str) -> list[Item]:
    """``groundtruth[:N[:SEED]]``: N (default 1000) images of the generated task with their masks."""
    from .groundtruth import CLASSES, generate

    parts = text.split(":")
    try:
        n = int(parts[1]) if len(parts) > 1 and parts[1] else 1000
        seed = int(parts[2]) if len(parts) > 2 else GROUNDTRUTH_SEED
        if n < 1 or len(parts) > 3:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"--images {text!r}: the generated task is groundtruth, groundtruth:N or groundtruth:N:SEED "
            "(N images, N >= 1)"
        ) from None
    images, labels, masks = generate(n, seed)
    return [
        Item(f"{GROUNDTRUTH}/{seed}/{i:06d}", int(labels[i]), image=images[i], mask=masks[i], classes=len(CLASSES))
        for i in range(n)
    ]


def resolve(
    sources: Sequence[str] | str, imagenette_root: str | os.PathLike | None = None, *, download: bool = True
) -> list[Item]:
    """The images of ``sources``: ``["builtin"]``, ``["imagenette"]`` (downloaded when missing,
    unless ``download=False``), ``["groundtruth:N"]``, one folder (ImageNet layout), or image
    files; a single string is one source. Nothing is loaded from disk yet (:func:`load`)."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    sources = [os.fspath(s) for s in sources]
    if len(sources) == 1 and (sources[0] == GROUNDTRUTH or sources[0].startswith(GROUNDTRUTH + ":")):
        return groundtruth_items(sources[0])
    if sources == ["builtin"]:
        return [Item(p.name, p.label, image=p.image) for p in builtin_photos()]
    if sources == ["imagenette"]:
        return [Item(p.name, p.label, image=p.image) for p in imagenette_rows(imagenette_root, download=download)]
    if len(sources) == 1 and Path(sources[0]).expanduser().is_dir():
        return folder_items(sources[0])
    return [Item(Path(s).name, None, str(Path(s).expanduser())) for s in sources]


def load(item: Item) -> torch.Tensor:
    """``item``'s image, 3×H×W in [-1, 1] (:class:`~pullbacks.images.ImageLoadError` if its file cannot be used)."""
    if item.image is not None:
        return item.image
    if item.path is None:
        raise ValueError(f"{item.name}: an item needs an image or the path of one")
    return load_image(item.path)


NAMED = ("builtin", "imagenette")  # the sources whose images a key names: "builtin:chelsea"


def find(key: str | os.PathLike, imagenette_root: str | os.PathLike | None = None) -> Item:
    """One image by key: ``"builtin:<name>"`` or ``"imagenette:<name>"`` (never downloads), else a file path."""
    text = os.fspath(key)
    source, sep, name = text.partition(":")
    if sep and source in NAMED:
        items = resolve_named(source, imagenette_root)
        for item in items:
            if item.name.casefold() == name.strip().casefold():
                return item
        raise ValueError(f"no {source} image named {name!r}: choose one of " + ", ".join(repr(i.name) for i in items))
    path = Path(text).expanduser()
    return Item(path.stem, None, str(path))


_NAMED: dict[str, list[Item]] = {}


def resolve_named(source: str, imagenette_root: str | os.PathLike | None = None) -> list[Item]:
    """The items of a named source (``NAMED``), resolved once per process (never downloads)."""
    key = f"{source}:{imagenette_root}"
    if key not in _NAMED:  # a key never downloads Imagenette: the notebook's paper section does that
        _NAMED[key] = resolve([source], imagenette_root, download=False)
    return _NAMED[key]
