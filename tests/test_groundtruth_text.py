"""Known answers for text: the task's deciding tokens, the token metrics on hand-made maps, and
the committed classifier (accuracy, full coverage, readable by the command line)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is the optional extra pullbacks[text]")

from pullbacks.evaluation.suite import pointing_game, relevance_mass_accuracy  # noqa: E402
from pullbacks.experiments import text as experiment  # noqa: E402
from pullbacks.groundtruth import text as task  # noqa: E402


def test_the_deciding_tokens_are_the_marker_and_the_colour_after_it():
    texts, labels, masks = task.generate(300, seed=5)
    tok = task.tokenizer()
    for text, label, mask in zip(texts, labels.tolist(), masks):
        tokens = tok.convert_ids_to_tokens(tok(text)["input_ids"])
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) == task.LENGTH + 2
        at = [i for i, m in enumerate(mask.tolist()) if m]
        assert [tokens[i] for i in at] == [task.MARKER, task.COLOURS[label]]
        colours = [t for t in tokens if t in task.COLOURS]
        assert len(colours) == 2 and colours.count(task.COLOURS[label]) == 1  # one decoy, another colour
        assert tokens.count(task.MARKER) == 1
    assert len(set(labels.tolist())) == 4
    assert task.generate(3, seed=5)[0] == texts[:3]  # reproducible from the seed


def test_token_metrics_on_hand_made_maps():
    """Scores (N, 1, 1, n) as the evaluation shapes them: positive mass on the mask over all
    positive mass (negatives ignored), and the pointing game with a tie."""
    scores = torch.tensor([[[[0.5, -2.0, 1.5, 2.0]]], [[[3.0, 3.0, -1.0, 0.0]]]], dtype=torch.float64)
    masks = torch.tensor([[[False, True, True, False]], [[False, True, False, False]]])
    rma = relevance_mass_accuracy({"m": scores}, masks)["m"]
    np.testing.assert_allclose(rma, [1.5 / 4.0, 3.0 / 6.0])
    pg = pointing_game({"m": scores}, masks)["m"]
    np.testing.assert_array_equal(pg, [0.0, 1.0])  # row 2: a tie for the top, one of them in the mask


@pytest.fixture(scope="module")
def trained():
    return experiment.load()


def test_the_committed_classifier_is_accurate_and_fully_gated(trained):
    import pullbacks
    from pullbacks.text import explain_tokens

    model, tok = trained
    info = json.loads((task.FOLDER / "training.json").read_text())
    assert info["held_out_accuracy"] >= 0.95
    texts, labels, _ = task.generate(300, task.HELD_OUT_SEED)
    with torch.no_grad():
        pred = model(input_ids=torch.tensor([tok(t)["input_ids"] for t in texts])).logits.argmax(1)
    assert float((pred == labels).float().mean()) >= 0.95
    got = explain_tokens(model, tok, texts[0], int(labels[0]), strict=True)
    assert got.coverage.complete and set(got.coverage.gated) >= {"relu", "gelu", "norm", "attention"}
    with pullbacks.soft_gates(strict=True):
        model(input_ids=torch.tensor([tok(texts[0])["input_ids"]]))


def test_evaluation_writes_as_it_goes_and_resumes(tmp_path, monkeypatch):
    calls = []
    real = experiment.attributions

    def counted(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "attributions", counted)
    monkeypatch.setattr(experiment, "IG_STEPS", 2)
    first = experiment.evaluate(tmp_path, n=6, batch=3, progress=False)
    assert calls == [3, 3] and len(first["correct"]) == 6
    assert set(first["scores"]) == {"relevance_mass_accuracy", "pointing_game"}
    assert all(len(v) == 6 for v in first["scores"]["pointing_game"].values())
    again = experiment.evaluate(tmp_path, n=6, batch=3, progress=False)
    assert calls == [3, 3] and again == first  # nothing recomputed
    assert "Pullback · input" in experiment.table(first)


def test_the_evaluation_page_shows_the_committed_results():
    root = task.FOLDER.parents[3]
    results = json.loads((root / "media" / "groundtruth" / "text" / "results.json").read_text())
    assert results["n"] == 1000 and len(results["correct"]) == 1000
    assert experiment.table(results) in (root / "EVALUATION.md").read_text(encoding="utf-8")
