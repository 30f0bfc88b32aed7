"""pullbacks.ipynb: its logic (pullbacks.paper), its committed outputs, and a headless run.

The "internet path" (pretrained weights and Imagenette downloaded) cannot run here; it is
tested by injecting random weights through the same loading function and five labelled
stand-in rows, which checks everything but the downloads: models, rows, columns, files.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch.nn.functional as F

from pullbacks import models as models_module
from pullbacks import sources
from pullbacks.apps import notebook as paper
from pullbacks.images import IMAGENETTE_ROWS, DataUnavailableError, Photo, builtin_photos
from pullbacks.models import WeightsUnavailableError, load_model

pytestmark = pytest.mark.slow  # papermill runs and real-size grids

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "pullbacks.ipynb"
PAPER_MODELS = ["resnet50", "vgg11_bn", "densenet121"]
PAPER_COLUMNS = ["tench", "cassette player", "church", "garbage truck", "golf ball", "ostrich"]
MACHINE_PATH = re.compile(r"(/(?:work|root|home|Users|tmp|private)/|[A-Za-z]:\\\\)")


@pytest.fixture(scope="module")
def small_rows():
    """Five rows labelled like the paper's Imagenette rows, 32×32 so the big nets are fast on CPU
    (real photos: random noise through these nets is slow, denormals)."""
    photos = builtin_photos()
    names = [models_module.imagenet_classes()[label] for _, label in IMAGENETTE_ROWS]
    return [
        Photo(name, F.interpolate(photos[i % 4].image[None], size=32, mode="bilinear", antialias=True)[0], label)
        for i, (name, (_, label)) in enumerate(zip(names, IMAGENETTE_ROWS))
    ]


@pytest.fixture
def online(monkeypatch, small_rows):
    """As if online: 'default' weights load (random, seeded) and Imagenette is on disk."""
    calls = []

    def fake_load_model(name, *, weights="default", device=None, seed=None):
        calls.append((name, weights))
        return load_model(name, weights=None, device=device, seed=0)

    def fake_imagenette_rows(root=None, download=True, **kw):
        calls.append(("imagenette", download))
        return list(small_rows)

    monkeypatch.setattr(paper, "load_model", fake_load_model)
    monkeypatch.setattr(sources, "imagenette_rows", fake_imagenette_rows)  # where every front end resolves images
    return calls


@pytest.fixture
def offline(monkeypatch):
    """As if offline: only the embedded model loads; Imagenette is missing."""
    real = load_model

    def fake_load_model(name, *, weights="default", device=None, seed=None):
        if name != "efficientnet_lite0":
            raise WeightsUnavailableError(
                f"Pretrained weights for {name!r} are not available: no internet.\n"
                "torchvision looks for them in the cache folder\n    /home/someone/.cache/torch/hub/checkpoints"
            )
        return real(name, weights=None, device=device, seed=0)  # fast; the real one is tested elsewhere

    def fake_imagenette_rows(root=None, download=True, **kw):
        raise DataUnavailableError(
            "The Imagenette data set is not available.\nIt is looked for in "
            "the folder\n    /home/someone/.cache/pullbacks/imagenette"
        )

    monkeypatch.setattr(paper, "load_model", fake_load_model)
    monkeypatch.setattr(sources, "imagenette_rows", fake_imagenette_rows)  # where every front end resolves images


# --------------------------------------------------------------------------- the logic


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_internet_path_renders_the_papers_figures(online, tmp_path, name):
    setup = paper.paper_setup(name, "imagenette", "cpu")
    assert setup.loaded.name == name and not setup.fallback and setup.data == "imagenette"
    assert setup.message == f"{name}: pretrained weights; the paper's 5 Imagenette validation rows; device cpu."
    assert online == [(name, "default"), ("imagenette", True)]
    figures = paper.paper_grids(setup, steps=1, out=tmp_path / "media", progress=False, batch_size=32)
    file_name = f"{name}_alpha_20_steps_1.jpg"
    expected = {
        tmp_path / "media" / folder / file_name
        for folder in ("pullback_diff", "vanilla_grad_diff", "pullback", "vanilla_grad")
    }
    assert set(figures.files) == expected
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in expected)
    grid = figures.grids["pullback"]
    assert grid.target_names == PAPER_COLUMNS and grid.row_names == PAPER_COLUMNS[:5]
    assert grid.targets == [0, 482, 497, 569, 574, 9]
    assert figures.diff_files["gradient"] == tmp_path / "media" / "vanilla_grad_diff" / file_name
    assert grid.figure._suptitle.get_text() == f"{name}: excitation pullback (excitation recipe), 1 step(s), alpha 20"


def test_internet_path_defaults_and_sweep(online, tmp_path):
    setup = paper.paper_setup("densenet121", "imagenette", "auto")
    assert setup.loaded.temperature == 0.3 and setup.loaded.device == models_module.resolve_device("auto")
    diffs, fig, path = paper.paper_sweep(setup, rows=[0, 2], temperatures=[0.3, 1.0], steps=1, out=tmp_path / "media")
    assert path == tmp_path / "media" / "temperature_sweep" / "densenet121_alpha_20_steps_1.jpg" and path.is_file()
    assert diffs.shape == (2, 3, 3, 32, 32)
    assert [fig.axes[4 * r].get_ylabel() for r in range(2)] == ["tench → tench", "church → church"]
    _, fig, _ = paper.paper_sweep(setup, rows=[1, 7], target="ostrich", temperatures=[1.0], steps=1, out=None)
    assert [fig.axes[3 * r].get_ylabel() for r in range(1)] == ["cassette player → ostrich"]  # row 7 skipped


def test_offline_fallback_says_so_in_one_line(offline, capsys):
    setups = list(paper.paper_setups(PAPER_MODELS, "imagenette", "cpu"))
    assert [s.requested for s in setups] == PAPER_MODELS
    assert all(s.loaded.name == "efficientnet_lite0" and s.fallback and s.data == "builtin" for s in setups)
    assert [s.duplicate for s in setups] == [False, True, True]
    first = setups[0].message
    assert first == (
        "resnet50: pretrained weights not cached and not downloadable (offline?), so using the "
        "embedded efficientnet_lite0 instead; Imagenette not on disk and not downloadable, so "
        "using the 4 built-in photos; device cpu."
    )
    assert setups[1].message.endswith("the same as for resnet50 above, so not rendered again.")
    for s in setups:
        assert "\n" not in s.message and not MACHINE_PATH.search(s.message)
        assert len(s.details) == 2 and "/home/someone/.cache" in s.details[0]  # the full story, not printed
    assert [p.name for p in setups[0].photos] == ["chelsea", "coffee", "rocket", "motorcycle"]
    assert capsys.readouterr().out == ""


def test_offline_fallback_can_be_refused(offline):
    with pytest.raises(WeightsUnavailableError):
        paper.paper_setup("resnet50", "builtin", "cpu", fallback=False)
    with pytest.raises(DataUnavailableError):
        paper.paper_setup("efficientnet_lite0", "imagenette", "cpu", fallback=False)


def test_setup_options(offline):
    s = paper.paper_setup("efficientnet_lite0", "builtin", "cpu", max_rows=2)
    assert s.message == (
        "efficientnet_lite0: embedded pretrained weights; the 4 built-in photos, the first 2 of them; device cpu."
    )
    assert s.row_names == ["chelsea", "coffee"] and s.images.shape == (2, 3, 224, 224)
    assert paper.paper_setup("efficientnet_lite0", "builtin", "cpu", weights="random").message.startswith(
        "efficientnet_lite0: random weights;"
    )
    with pytest.raises(ValueError, match="data must be one of"):
        paper.paper_setup("efficientnet_lite0", "imagenet", "cpu")
    with pytest.raises(ValueError, match="max_rows"):
        paper.paper_setup("efficientnet_lite0", "builtin", "cpu", max_rows=0)
    names = [s.requested for s in paper.paper_setups('["efficientnet_lite0", "resnet50"]', "builtin", "cpu")]
    assert names == ["efficientnet_lite0", "resnet50"]  # a list given as one string (papermill -p)


def test_download_notices_with_local_paths_are_not_printed(monkeypatch, small_rows):
    def noisy_load_model(name, *, weights="default", device=None, seed=None):
        sys.stderr.write('Downloading: "https://download.pytorch.org/models/x.pth" to /home/someone/.cache/x.pth\n')
        sys.stderr.write("100%|##########| 97.8M/97.8M\n")
        print("Downloading https://example.org/imagenette2-320.tgz to /home/someone/.cache/imagenette2-320.tgz")
        return load_model("efficientnet_lite0", weights=None, seed=0)

    monkeypatch.setattr(paper, "load_model", noisy_load_model)
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    paper.paper_setup("resnet50", "builtin", "cpu")
    assert err.getvalue() == "100%|##########| 97.8M/97.8M\n"  # progress bars still show
    assert out.getvalue() == ""


# --------------------------------------------------------------------------- the notebook


def _notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def test_parameters_cell_has_the_papers_defaults():
    nb = _notebook()
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1
    values: dict = {}
    exec("".join(cells[0]["source"]), {}, values)
    assert values["models"] == PAPER_MODELS
    assert values["device"] == "auto" and values["weights"] == "default" and values["data"] == "imagenette"
    assert (values["steps"], values["alpha"], values["eps"], values["recipe"]) == (5, 20.0, "recipe", "excitation")
    assert values["temperature"] is None and values["extra_class"] == "ostrich" and values["out"] == "media"


def test_committed_outputs_show_figures_without_paths_or_errors():
    text = NOTEBOOK.read_text(encoding="utf-8")
    assert len(text.encode()) < 5_000_000
    nb = json.loads(text)
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert "Traceback" not in text and "\\u001b[0;31m" not in text
    images = [o for o in outputs if "image/jpeg" in o.get("data", {}) or "image/png" in o.get("data", {})]
    assert len(images) >= 4  # pullback grid, vanilla grid, sweep, explorer example
    plain = json.dumps(outputs) + json.dumps(nb.get("metadata", {}))
    assert not MACHINE_PATH.search(plain), MACHINE_PATH.search(plain)
    ids = [c.get("id") for c in nb["cells"]]
    assert None not in ids and len(set(ids)) == len(ids)  # nbformat 4.5: every cell has its own id


def test_notebook_runs_headless(tmp_path):
    """The notebook top to bottom with the embedded model, the built-in photos and 1 step."""
    papermill = pytest.importorskip("papermill")
    media = tmp_path / "media"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
        log_output=False,
        parameters=dict(
            models=["efficientnet_lite0"],
            data="builtin",
            device="cpu",
            steps=1,
            max_rows=2,
            sweep_rows=[0],
            sweep_temperatures=[0.3, 1.0],
            out=str(media),
            batch_size=8,
            progress=False,
            groundtruth=["vit"],
            options={"replay": False, "gate": "normal_cdf"},
        ),
    )
    name = "efficientnet_lite0_alpha_20_steps_1.jpg"
    for folder in ("pullback_diff", "vanilla_grad_diff", "pullback", "vanilla_grad"):
        assert (media / folder / name).stat().st_size > 10_000, folder
    assert (media / "temperature_sweep" / name).is_file()  # named with its steps, like the grids
    executed = json.loads((tmp_path / "executed.ipynb").read_text(encoding="utf-8"))
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    printed = "".join("".join(o.get("text", "")) for o in outputs)
    assert "efficientnet_lite0: embedded pretrained weights; the 4 built-in photos, the first 2 of them" in printed
    assert sum("image/jpeg" in o.get("data", {}) for o in outputs) >= 4
    pages = ["".join(o["data"]["text/html"]) for o in outputs if "text/html" in o.get("data", {})]
    assert sum("<span" in p and "mark" in p for p in pages) >= 2  # the text section: pullback and gradient
