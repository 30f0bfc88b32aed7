"""ImageNet class names, with a forgiving lookup by id, numeric string or name."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Sequence
from typing import Any, overload


class ClassNames(Sequence[str]):
    """The ImageNet class names, in class-id order, with a forgiving :meth:`index`."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(str(n) for n in names)
        self._exact: dict[str, int] = {}
        self._by_lower: dict[str, list[int]] = {}
        for i, n in enumerate(self._names):
            self._exact.setdefault(" ".join(n.split()), i)
            self._by_lower.setdefault(" ".join(n.split()).casefold(), []).append(i)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return list(self._names[i])
        return self._names[i]

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"ClassNames({len(self)} names: {self._names[0]!r}, ..., {self._names[-1]!r})"

    def index(self, name_or_id: str | int) -> int:  # type: ignore[override]
        """Class id of an int, a numeric string ("482") or a name: an exact match wins
        ("cardigan" is the sweater, 474; "Cardigan" the corgi, 264), else a case-insensitive
        one; a name that matches several classes only case-insensitively is a ValueError
        listing each with its id."""
        if isinstance(name_or_id, bool):
            raise TypeError("a class must be an int id or a name, not a bool")
        if isinstance(name_or_id, int) or hasattr(name_or_id, "__index__"):
            return self._check_range(int(name_or_id.__index__()))
        if not isinstance(name_or_id, str):
            raise TypeError(f"a class must be an int id or a name, got {type(name_or_id).__name__}")
        text = name_or_id.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return self._check_range(int(text))
        exact = " ".join(text.split())
        if exact in self._exact:
            return self._exact[exact]
        key = exact.casefold()
        if key in self._by_lower:
            ids = self._by_lower[key]
            if len(ids) == 1:
                return ids[0]
            raise ValueError(
                f"class name {name_or_id!r} is ambiguous: "
                + ", ".join(f"{self._names[i]!r} ({i})" for i in ids)
                + "; give the exact name or the id"
            )
        close = difflib.get_close_matches(key, list(self._by_lower), n=3, cutoff=0.6)
        hint = (
            "did you mean " + ", ".join(repr(self._names[self._by_lower[c][0]]) for c in close) + "?"
            if close
            else f"no similar name found; pass the class id (0 to {len(self) - 1}) instead"
        )
        raise ValueError(f"unknown class name {name_or_id!r}: {hint}")

    def _check_range(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise ValueError(f"class id {i} is out of range: valid ids are 0 to {len(self) - 1}")
        return i


@functools.cache
def imagenet_classes() -> ClassNames:
    """The 1000 ImageNet-1k class names from torchvision's weights metadata (offline)."""
    from torchvision.models import ResNet50_Weights

    return ClassNames(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
