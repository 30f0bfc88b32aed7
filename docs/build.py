"""Build the documentation site, offline: ``python docs/build.py`` (``pip install -e ".[docs]"``).

Stages every page into ``build/docs`` (the pages of ``docs/``, the evaluation and the benchmarks
from the repository's root, the command line's help generated from its parser, the figures the
pages show), rewrites the links between them for the site, then runs ``mkdocs build --strict``:
a broken link, a missing page or a docstring mkdocstrings cannot read fails the build. The site
lands in ``site/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "docs"
PAGES = {  # source (from the root) -> page of the site
    "docs/index.md": "index.md",
    "docs/method.md": "method.md",
    "docs/extending.md": "extending.md",
    "docs/images.md": "images.md",
    "docs/text.md": "text.md",
    "EVALUATION.md": "evaluation.md",
    "BENCHMARKS.md": "benchmarks.md",
    "docs/api.md": "api.md",
}
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def cli_page() -> str:
    """Every sub-command's ``--help``, from the parser itself."""
    sys.path.insert(0, str(ROOT))
    from pullbacks.apps.parser import build_parser

    parser = build_parser()
    parts = [
        "# Command line\n",
        "Generated from the parser (`pullbacks --help`).\n",
        "```text",
        parser.format_help(),
        "```\n",
    ]
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        parts += [f"## pullbacks {name}\n", "```text", sub.format_help(), "```\n"]
    return "\n".join(parts)


def rewrite(text: str, source: str, media: set[str]) -> str:
    """Links as the site sees them: pages by their site names, figures copied along, anything
    else of the repository (folders, code, reports) as plain code."""
    here = (ROOT / source).parent

    def one(m: re.Match) -> str:
        bang, label, target = m.groups()
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (here / path).resolve()
        rel = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else path
        if rel in PAGES:
            return f"{bang}[{label}]({PAGES[rel]}{'#' + anchor if anchor else ''})"
        if rel.startswith("media/") and resolved.is_file() and resolved.suffix.lower() in (".png", ".jpg", ".jpeg"):
            media.add(rel)
            return f"{bang}[{label}]({rel})"
        return f"`{label}` (`{rel}` in the repository)" if label.strip("`") != rel else f"`{rel}`"

    return LINK.sub(one, text)


def stage() -> Path:
    """Write every page into ``build/docs``."""
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    media: set[str] = set()
    for source, page in PAGES.items():
        (STAGE / page).write_text(rewrite((ROOT / source).read_text(encoding="utf-8"), source, media), encoding="utf-8")
    (STAGE / "cli.md").write_text(cli_page(), encoding="utf-8")
    for rel in sorted(media):
        (STAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, STAGE / rel)
    return STAGE


def main() -> int:
    stage()
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml")], cwd=ROOT
    ).returncode


if __name__ == "__main__":
    raise SystemExit(main())
