"""requirements.txt stays in step with pyproject.toml, and .ci/run installs the browser."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("notebook", "evaluate", "app", "text")  # what requirements.txt adds to the dependencies


def test_requirements_txt_is_pyproject_dependencies_and_user_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = list(project["dependencies"])
    for extra in EXTRAS:
        expected += [r for r in project["optional-dependencies"][extra] if r not in expected]
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = [line for line in lines if line and not line.startswith("#")]
    assert listed == expected, "requirements.txt should read:\n" + "\n".join(expected)


def test_notebook_extra_has_a_front_end_and_test_extra_covers_the_app():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(re.match(r"(jupyterlab|notebook)\b", r) for r in extras["notebook"])
    assert any(r.startswith("gradio") for r in extras["test"]) and any(r.startswith("gradio") for r in extras["app"])


def test_ci_installs_chromium_before_the_readme_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("apt-get install") < ci.index('bash -euo pipefail -c "$cmd"') and "chromium" in ci


@pytest.mark.slow  # a subprocess
def test_transformers_is_imported_only_when_used():
    """The text extra is optional: the package, its text module and its model loading import
    transformers only when a Hugging Face model is loaded."""
    import subprocess
    import sys

    code = (
        "import sys, pullbacks, pullbacks.text, pullbacks.models, pullbacks.core, pullbacks.apps.cli; "
        "pullbacks.soft_gates; assert 'transformers' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ci_lints_and_formats_before_the_tests_and_fails_on_a_broken_copy(tmp_path):
    """.ci/run runs ruff check and ruff format --check before the test command, and each fails on
    a deliberately broken copy of a package module (an unused import; a line written off-style)."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index('ruff" check .') < ci.index('bash -euo pipefail -c "$cmd"')
    assert ci.index("format --check .") < ci.index('bash -euo pipefail -c "$cmd"')
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    module = (ROOT / "pullbacks" / "core" / "calls.py").read_text()
    (tmp_path / "calls.py").write_text(module)
    for args in (["check"], ["format", "--check"]):
        assert subprocess.run([ruff, *args, "calls.py"], cwd=tmp_path, capture_output=True).returncode == 0
    (tmp_path / "calls.py").write_text("import os\n" + module)
    lint = subprocess.run([ruff, "check", "calls.py"], cwd=tmp_path, capture_output=True, text=True)
    assert lint.returncode != 0 and "F401" in lint.stdout
    (tmp_path / "calls.py").write_text(module.replace("def arg(", "def  arg(", 1))
    assert subprocess.run([ruff, "format", "--check", "calls.py"], cwd=tmp_path, capture_output=True).returncode != 0


def test_ci_type_checks_before_the_tests_and_fails_on_a_type_error(tmp_path):
    """.ci/run runs mypy (pyproject.toml's settings) before the test command; mypy fails on a
    module of the package given a type error."""
    import sys

    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("-m mypy") < ci.index('bash -euo pipefail -c "$cmd"')
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[dev]')")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "pullbacks").mkdir()
    (tmp_path / "pullbacks" / "__init__.py").write_text("")
    (tmp_path / "pullbacks" / "calls.py").write_text((ROOT / "pullbacks" / "core" / "calls.py").read_text())
    clean = subprocess.run([sys.executable, "-m", "mypy"], cwd=tmp_path, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout
    broken = (ROOT / "pullbacks" / "core" / "calls.py").read_text() + "\n\nwrong: int = 'not a number'\n"
    (tmp_path / "pullbacks" / "calls.py").write_text(broken)
    failed = subprocess.run([sys.executable, "-m", "mypy"], cwd=tmp_path, capture_output=True, text=True)
    assert failed.returncode != 0 and "Incompatible types in assignment" in failed.stdout


def test_every_name_of_the_api_page_has_a_docstring():
    """docs/api.md lists the public surface (mkdocstrings renders it); each name must say what it is."""
    import importlib

    names = re.findall(r"^::: ([\w.]+)$", (ROOT / "docs" / "api.md").read_text(), re.M)
    assert len(names) > 20
    missing = []
    for dotted in names:
        module, _, attr = dotted.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        if not (obj.__doc__ or "").strip():
            missing.append(dotted)
    assert missing == []


@pytest.mark.slow
def test_the_docs_site_builds_strict_and_a_broken_link_fails_it(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    import sys

    build = subprocess.run([sys.executable, "docs/build.py"], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    assert (ROOT / "site" / "api" / "index.html").read_text().count("excitation_pullback") > 2
    assert "pullbacks grid" in (ROOT / "site" / "cli" / "index.html").read_text()
    page = ROOT / "build" / "docs" / "index.md"
    page.write_text(page.read_text() + "\n[a page that is not there](nowhere.md)\n")
    broken = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert broken.returncode != 0 and "nowhere.md" in broken.stderr
