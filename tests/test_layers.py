"""Every import points down: a module imports only from its own layer or the layers below it
(docs/index.md, "Where things are"), function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pullbacks"
# the layers, bottom up; a name not listed is the package's root (its lazy re-exports, its version)
LAYERS = {
    "core": 0,
    "groundtruth": 1,  # the generated tasks and trained weights: data below the model registry
    "classes": 2,
    "images": 2,
    "sources": 2,
    "models": 2,
    "figures": 3,
    "evaluation": 4,
    "text": 4,
    "experiments": 5,
    "apps": 6,
}


def _layer(parts: list[str]) -> int | None:
    return LAYERS.get(parts[0].removesuffix(".py")) if parts else None


def _upward_imports(root: Path) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = list(path.relative_to(root).parts)
        mine = _layer(rel)
        if mine is None:
            continue
        package = rel[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [node.names[0].name])
            elif node.module and node.module.startswith("pullbacks."):
                target = node.module.split(".")[1:]
            else:
                continue
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                found.append((str(path.relative_to(root)), node.lineno, ".".join(target)))
    return found


def test_every_import_points_down():
    assert _upward_imports(PACKAGE) == []


def test_the_check_sees_an_upward_import(tmp_path):
    (tmp_path / "groundtruth").mkdir()
    (tmp_path / "groundtruth" / "task.py").write_text("def f():\n    from ..models.weights import x\n")
    assert _upward_imports(tmp_path) == [("groundtruth/task.py", 2, "models.weights")]
