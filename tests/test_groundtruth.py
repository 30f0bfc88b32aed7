"""The generated task with known evidence: deterministic, the mask is exactly the class
object, the baselines' closed forms, and the evaluation against the masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pullbacks.groundtruth import CLASSES, generate, sample


def test_the_task_is_deterministic_and_any_prefix_is_the_same_images():
    a, b = generate(12, seed=5), generate(12, seed=5)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    first = generate(5, seed=5)
    assert all(torch.equal(u[:5], v) for u, v in zip(a, first))
    other = generate(12, seed=6)
    assert not torch.equal(a[0], other[0])
    x, y, m = a
    assert x.shape == (12, 3, 64, 64) and x.dtype == torch.float32 and m.shape == (12, 64, 64) and m.dtype == torch.bool
    assert -1 <= float(x.min()) and float(x.max()) <= 1 and y.dtype == torch.long


def test_the_mask_is_exactly_the_pixels_of_the_class_object():
    for i in range(20):
        x, label, mask = sample(3, i)
        without, same_label, same_mask = sample(3, i, draw_object=False)
        assert label == same_label and torch.equal(mask, same_mask)
        changed = (x != without).any(0)
        assert torch.equal(changed, mask)  # the object, and nothing else, differs
        assert 40 < int(mask.sum()) < 900  # an object of 18-28 pixels across, somewhere in the image


@pytest.mark.slow  # over 2 s
def test_ten_classes_drawn_evenly():
    _, y, _ = generate(600, seed=1)
    counts = np.bincount(y.numpy(), minlength=len(CLASSES))
    assert len(CLASSES) >= 10 and counts.min() > 30


def test_generated_items_for_the_evaluation():
    from pullbacks.sources import GROUNDTRUTH_SEED, resolve

    items = resolve(["groundtruth:3"])
    x, y, m = generate(3, GROUNDTRUTH_SEED)
    assert [it.name for it in items] == [f"groundtruth/{GROUNDTRUTH_SEED}/{i:06d}" for i in range(3)]
    assert all(
        torch.equal(it.image, x[i]) and torch.equal(it.mask, m[i]) and it.label == int(y[i])
        for i, it in enumerate(items)
    )
    assert len(resolve(["groundtruth:2:7"])) == 2
    for bad in ("groundtruth:0", "groundtruth:x", "groundtruth:1:2:3"):
        with pytest.raises(ValueError, match="groundtruth:N"):
            resolve([bad])


def test_baseline_maps_closed_forms():
    from pullbacks.evaluation.methods import baseline_map

    x = torch.zeros(1, 3, 8, 8)
    x[:, 1, :, 4:] = 1.0  # a vertical step in channel 1 only
    edge = baseline_map(x, "edge")
    assert torch.equal(edge[:, 0], torch.zeros(1, 8, 8)) and torch.equal(edge[:, 2], torch.zeros(1, 8, 8))
    torch.testing.assert_close(edge[0, 1, 3, 3:5], torch.tensor([4.0, 4.0]))  # |S_x| = 1 + 2 + 1 either side
    assert float(edge[0, 1, 3, 1]) == 0.0  # flat inside
    centre = baseline_map(x, "centre")
    assert torch.equal(centre, centre.flip(-1)) and torch.equal(centre, centre.flip(-2))
    assert float(centre[0, 0, 3, 3]) == float(centre.max()) and torch.equal(centre[:, 0], centre[:, 2])
    r1, r2 = baseline_map(x, "random", 3), baseline_map(x, "random", 3)
    assert torch.equal(r1, r2) and not torch.equal(r1, baseline_map(x, "random", 4))
    assert 0 <= float(r1.min()) and float(r1.max()) < 1


def test_evaluation_against_the_masks():
    from torch import nn

    from pullbacks.evaluation import evaluate
    from pullbacks.evaluation.methods import Settings

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)
    ).eval()
    x, y, m = generate(3, 9)
    r = evaluate(
        model,
        x,
        y,
        methods=["gradient", "edge", "centre"],
        masks=m,
        progress=False,
        metrics=["relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game"],
        settings=Settings(),
    )
    assert set(r.scores) == {"relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game"}
    assert all(0 <= v <= 1 for s in r.scores.values() for a in s.values() for v in a)
    with pytest.raises(ValueError, match="--images groundtruth:N"):
        evaluate(model, x, y, methods=["gradient"], metrics=["pointing_game"], progress=False)
    with pytest.raises(ValueError, match=r"masks must have shape \(3, 64, 64\)"):
        evaluate(model, x, y, methods=["gradient"], metrics=["pointing_game"], masks=m[:2], progress=False)


@pytest.mark.slow  # over 2 s
def test_a_tiny_training_run_writes_its_weights_and_resumes(tmp_path):
    from pullbacks.groundtruth import train as T

    report = T.train("densenet", tmp_path, images=64, epochs=1, batch=32, held_out=32, progress=False)
    assert 0 <= report["held_out_accuracy"] <= 1 and (tmp_path / "densenet.pt").exists()
    weights = torch.load(tmp_path / "densenet.pt", weights_only=True)
    again = T.train("densenet", tmp_path, images=64, epochs=1, batch=32, held_out=32, progress=False)
    assert again["train_seconds"] == report["train_seconds"]  # the finished epoch was not run again
    assert all(torch.equal(weights[k], v) for k, v in torch.load(tmp_path / "densenet.pt", weights_only=True).items())


def test_the_report_marks_what_does_not_beat_the_edge_detector():
    from pullbacks.evaluation.methods import Settings
    from pullbacks.evaluation.report import Evaluation

    r = Evaluation(
        model_name="m",
        methods=["pullback", "gradient", "edge"],
        metrics=["pointing_game"],
        image_names=[str(i) for i in range(6)],
        targets=[0] * 6,
        target_names=["a"] * 6,
        settings=Settings(),
    )
    r.scores["relevance_mass_accuracy"] = {
        "pullback": np.array([0.6, 0.7, 0.8, 0.6, 0.7, 0.9]),
        "gradient": np.array([0.2, 0.5, 0.1, 0.3, 0.1, 0.2]),
        "edge": np.array([0.3, 0.2, 0.3, 0.3, 0.2, 0.3]),
    }
    assert not r.below_edge("pullback", "relevance_mass_accuracy") and r.below_edge(
        "gradient", "relevance_mass_accuracy"
    )
    table = r.table()
    assert "| Excitation pullback | 0.717 ± 0.048 |" in table and "| Vanilla gradient | 0.233 ± 0.061 † |" in table
    assert ("pullback", "edge") in r.pairs() and ("gradient", "edge") in r.pairs() and ("edge", "edge") not in r.pairs()
    assert "†: not better than the edge detector" in r.report()


@pytest.mark.slow  # over 2 s
@pytest.mark.parametrize("family", ["resnet", "vgg", "densenet", "vit"])
def test_the_committed_networks_solve_images_they_never_saw(family):
    from pullbacks.groundtruth.weights import WEIGHTS
    from pullbacks.models import load_model

    if not (WEIGHTS / f"{family}.pt").exists():
        pytest.skip(f"no committed weights for groundtruth/{family} (python -m pullbacks.groundtruth.train {family})")
    net = load_model(f"groundtruth/{family}")
    assert list(net.classes) == list(CLASSES)
    x, y, _ = generate(200, seed=4_000_037)  # neither the training (0), held-out (1_000_003) nor evaluation seed
    with torch.no_grad():
        accuracy = float((net.model(x).argmax(1) == y).float().mean())
    assert accuracy >= 0.95, accuracy


@pytest.mark.slow
def test_the_sweep_scores_the_pullback_against_the_masks():
    from pullbacks.experiments import sweep
    from pullbacks.groundtruth.weights import WEIGHTS

    if not (WEIGHTS / "densenet.pt").exists():
        pytest.skip("no committed weights for groundtruth/densenet")
    scores = sweep.sweep("densenet", temperatures=(0.01, 1.0), n=20)
    assert set(scores) == {0.01, 1.0} and all(0 < v < 1 for v in scores.values())
    assert scores[1.0] != scores[0.01]  # the temperature changes where the relevance goes


def test_the_known_answers_table_marks_what_does_not_beat_the_edge_detector():
    from pullbacks.experiments.tables import table

    edge = [0.2, 0.3, 0.1, 0.4]
    run = {
        "methods": ["pullback", "gradient", "edge"],
        "scores": {
            "relevance_mass_accuracy": {
                "pullback": [0.5, 0.6, 0.4, 0.7],
                "gradient": [0.3, 0.2, 0.2, None],
                "edge": edge,
            }
        },
    }
    text = table({"a": run, "b": run}, "relevance_mass_accuracy").splitlines()
    assert text[0] == "| Method | a | b |"
    assert text[2] == "| Excitation pullback | 0.550 ± 0.065 | 0.550 ± 0.065 |"  # always 0.3 above the edges
    assert text[3].startswith("| Vanilla gradient | 0.233 ± 0.033 †")  # a NaN left out; 2 of 3 above: no clear win
    assert text[4] == "| Edge detector | 0.250 ± 0.065 | 0.250 ± 0.065 |"  # a baseline is never marked


@pytest.mark.slow  # over 2 s
def test_imagenet_photos_shown_to_the_task_network_are_labelled_by_its_prediction():
    """A grid of the built-in photos under a 10-class network: their ImageNet labels are not its
    classes (they used to index past its class list), so the rows take its prediction."""
    from pullbacks.apps.cli import _photos
    from pullbacks.models import load_model
    from pullbacks.sources import resolve

    loaded = load_model("groundtruth/vgg")
    images, labels, names, labelled = _photos(["builtin"], loaded)
    assert not labelled and all(0 <= c < 10 for c in labels) and len(labels) == 4
    items = resolve(["groundtruth:3"])
    assert [i.label_for(10) for i in items] == [i.label for i in items]
    assert resolve(["builtin"])[0].label_for(10) is None and resolve(["builtin"])[0].label_for(1000) is not None
    from pullbacks.apps.explorer import explore

    result = explore("builtin:chelsea", loaded, steps=1)  # the target defaults to its prediction, not 285
    assert result.target_name in loaded.classes


@pytest.mark.slow  # over 2 s
@pytest.mark.parametrize("column", ["relevance_mass_accuracy", "pointing_game"])
def test_the_evaluation_page_shows_the_committed_known_answer_runs(column):
    """EVALUATION.md's known-answer tables are the committed runs' results, as the tables command
    prints them (seed recipe on the four networks, and the follow-up's recipe)."""
    import json
    from pathlib import Path

    from pullbacks.experiments.tables import table

    root = Path(__file__).resolve().parents[1]
    page = (root / "EVALUATION.md").read_text(encoding="utf-8")
    for runs in (
        ["densenet", "resnet", "vgg", "vit"],
        ["resnet-semantic", "vgg-semantic", "densenet-semantic", "vit-semantic"],
    ):
        results = {
            f"groundtruth/{r}": json.loads((root / "media" / "groundtruth" / r / "results.json").read_text())
            for r in runs
        }
        assert table(results, column) in page, (runs, column)


SEVEN = {"resnet-seven": "seven-metrics-1000", "vgg-seven": "seven-metrics-1000-vgg"}  # run -> its marker


@pytest.mark.parametrize("run_name", list(SEVEN))
def test_the_evaluation_page_quotes_the_committed_seven_metric_run(run_name):
    """Each n = 1000 table of the follow-up's metrics on EVALUATION.md is its committed run's
    own report (each row, as the report printed it), and that report covers 1000 images."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = (root / "EVALUATION.md").read_text(encoding="utf-8")
    marker = SEVEN[run_name]
    if f"<!-- {marker} -->" not in page:
        pytest.skip(f"{run_name} is not quoted on the page yet (its run is partial)")
    run = root / "media" / "groundtruth" / run_name
    report = (run / "evaluation.md").read_text(encoding="utf-8")
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert len(results["images"]) == 1000
    start = page.index(f"<!-- {marker} -->")
    quoted = page[start : page.index(f"<!-- /{marker} -->")].splitlines()[1:]
    rows = [line for line in quoted if line.startswith("| ")]
    assert len(rows) >= 8  # the header and at least the six methods and one difference
    for line in rows:
        assert line in report.splitlines(), line
