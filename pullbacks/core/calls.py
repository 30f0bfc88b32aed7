"""One intercepted call: the torch function, its arguments, and whether it overwrites its input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    """Argument ``index`` of a call, given by position or by ``name``."""
    return args[index] if len(args) > index else kwargs.get(name, default)


class Call:
    """One intercepted call: the function, its arguments, and whether its form always
    works in place."""

    __slots__ = ("func", "args", "kwargs", "inplace")

    def __init__(self, func: Callable, args: tuple, kwargs: dict, inplace: bool) -> None:
        self.func, self.args, self.kwargs, self.inplace = func, args, kwargs, inplace

    @property
    def input(self) -> Any:
        return self.args[0] if self.args else self.kwargs.get("input", self.kwargs.get("self"))

    def arg(self, index: int, name: str, default: Any) -> Any:
        return arg(self.args, self.kwargs, index, name, default)

    def writes_input(self, index: int | None = None) -> bool:
        """True if the call overwrites its input: an in-place form, or ``inplace=True``
        (by keyword, or argument ``index``)."""
        if self.inplace:
            return True
        if index is None:
            return bool(self.kwargs.get("inplace", False))
        return bool(self.arg(index, "inplace", False))
