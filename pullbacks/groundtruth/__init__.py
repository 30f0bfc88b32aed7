"""Known answers: a generated task whose deciding pixels are known (:mod:`.task`)."""

from .task import CLASSES, SIZE, generate, sample

__all__ = ["CLASSES", "SIZE", "generate", "sample"]
