"""Pullbacks for text: token scores equal to a straight-through reference, invariants of the
reduction (batching, contrast, norm), the errors, the rendering and the command line."""

from __future__ import annotations

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the optional extra pullbacks[text]")

from helpers import assert_unchanged, snapshot  # noqa: E402
from reference_beyond import patched_functional  # noqa: E402
from test_transformers import patched_modules  # noqa: E402

from pullbacks.core.errors import ProblemValueError  # noqa: E402
from pullbacks.text import explain_tokens  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(46)]


def tokenizer(special: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if special:
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def gpt2(dtype=torch.float64):
    torch.manual_seed(0)
    return (
        T.GPT2LMHeadModel(T.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16)).eval().to(dtype)
    )


def llama(dtype=torch.float64):
    torch.manual_seed(0)
    config = T.LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=3,
        pad_token_id=0,
        id2label={0: "red", 1: "green", 2: "blue"},
        label2id={"red": 0, "green": 1, "blue": 2},
    )
    return T.LlamaForCausalLM(config).eval().to(dtype), config


def distilbert(dtype=torch.float64):
    torch.manual_seed(0)
    config = T.DistilBertConfig(
        vocab_size=50,
        dim=16,
        hidden_dim=32,
        n_layers=2,
        n_heads=2,
        num_labels=3,
        id2label={0: "red", 1: "green", 2: "blue"},
        label2id={"red": 0, "green": 1, "blue": 2},
    )
    return T.DistilBertForSequenceClassification(config).eval().to(dtype)


def reference_scores(model, tok, text, target, position, temperatures=None, **options):
    """g·e with g from the straight-through reference (patched functions and module classes)."""
    ids = torch.tensor([tok(text)["input_ids"]])
    e = model.get_input_embeddings()(ids).detach().requires_grad_()
    with patched_functional(temperatures=temperatures, **options), patched_modules():
        logits = model(inputs_embeds=e, attention_mask=torch.ones_like(ids)).logits
    y = logits[0, position, target] if logits.dim() == 3 else logits[0, target]
    (g,) = torch.autograd.grad(y, e)
    return (g * e).sum(-1)[0].detach()


@pytest.mark.parametrize("build", ["gpt2", "llama", "distilbert"])
def test_token_scores_equal_the_reference_and_leave_the_model_alone(build):
    model = {"gpt2": gpt2, "llama": lambda: llama()[0], "distilbert": distilbert}[build]()
    tok = tokenizer(special=build == "distilbert")
    before = snapshot(model)
    text = "w5 w9 w12 w7 w30"
    target = 2 if build == "distilbert" else "w11"
    got = explain_tokens(model, tok, text, target, strict=True)
    assert got.coverage is not None and got.coverage.complete
    t = 2 if build == "distilbert" else WORDS.index("w11")
    ref = reference_scores(model, tok, text, t, -1)
    torch.testing.assert_close(got.scores, ref, rtol=1e-9, atol=1e-12)
    assert_unchanged(model, before)
    vanilla = explain_tokens(model, tok, text, target, method="gradient")
    assert float((vanilla.scores - got.scores).norm()) > 1e-6 * float(got.scores.norm())  # the rules act
    if build == "distilbert":
        assert got.special == [True, False, False, False, False, False, True] and got.tokens[0] == "[CLS]"


def test_batching_contrast_and_the_norm_reduction():
    model, tok = gpt2(), tokenizer()
    texts = ["w5 w9 w12 w7", "w8 w3"]
    batch = explain_tokens(model, tok, texts, "w11")
    for text, got in zip(texts, batch):  # right padding, masked: each text as if alone
        torch.testing.assert_close(got.scores, explain_tokens(model, tok, text, "w11").scores, rtol=1e-9, atol=1e-12)
    contrast = explain_tokens(model, tok, texts[0], "w11", foil="w20")
    minus = explain_tokens(model, tok, texts[0], "w20")
    torch.testing.assert_close(contrast.scores, batch[0].scores - minus.scores, rtol=1e-9, atol=1e-12)
    assert contrast.label == "'w11' − 'w20' (pullback)"
    norms = explain_tokens(model, tok, texts[0], "w11", score="norm")
    ids = torch.tensor([tok(texts[0])["input_ids"]])
    e = model.get_input_embeddings()(ids).detach()
    assert (norms.scores >= 0).all()
    # the dot score is bounded by ‖g‖‖e‖ (Cauchy–Schwarz), with equality nowhere in general
    assert (batch[0].scores.abs() <= norms.scores * e[0].norm(dim=-1) + 1e-12).all()


def test_the_default_target_is_the_models_top_choice():
    model, tok = gpt2(), tokenizer()
    with torch.no_grad():
        top = int(model(torch.tensor([tok("w5 w9")["input_ids"]])).logits[0, -1].argmax())
    assert explain_tokens(model, tok, "w5 w9").target == repr(WORDS[top])
    assert explain_tokens(model, tok, "w5 w9", method="gradient").label == f"{WORDS[top]!r} (gradient)"


def test_errors_name_the_fix():
    model, tok = gpt2(), tokenizer()
    with pytest.raises(ProblemValueError, match="2 tokens"):
        explain_tokens(model, tok, "w5 w9", "w1 w2")
    with pytest.raises(ProblemValueError, match="non-empty list"):
        explain_tokens(model, tok, [], "w1")
    with pytest.raises(ProblemValueError, match="no tokens"):
        explain_tokens(model, tok, "", "w1")
    with pytest.raises(ProblemValueError, match="unknown score"):
        explain_tokens(model, tok, "w5", "w1", score="sum")
    classifier = distilbert()
    with pytest.raises(ProblemValueError, match="labels are"):
        explain_tokens(classifier, tokenizer(), "w5", "purple")
    assert explain_tokens(classifier, tokenizer(), "w5", "GREEN").target == "green"
    classifier.train()
    with pytest.raises(ProblemValueError, match="eval"):
        explain_tokens(classifier, tokenizer(), "w5", 1)


def test_rendering_marks_signs_and_special_tokens():
    got = explain_tokens(distilbert(), tokenizer(special=True), "w5 w9", 1)
    page = got.html()
    assert page.count("<span") == 4 and page.count("dashed") == 2 and "[CLS]" in page
    got.scores = torch.tensor([1.0, -0.5, 0.0, 0.25])
    page = got.html()
    assert "rgba(220,40,40,1.000)" in page and "rgba(40,90,220,0.500)" in page
    assert "\x1b[48;2;255;0;0m" in got.terminal()


def test_explain_text_on_the_command_line(tmp_path, capsys):
    from pullbacks.apps.cli import main

    model, tok = gpt2(torch.float32), tokenizer()
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complete coverage: no warning
        code = main(
            [
                "explain-text",
                "w5 w9 w12",
                "--model",
                f"hf/{tmp_path / 'lm'}",
                "--target",
                "w11",
                "--temperatures",
                "gelu=0.5",
                "--html",
                str(tmp_path / "t.html"),
            ]
        )
    out = capsys.readouterr().out
    assert code == 0 and "'w11'" in out and len(out.splitlines()) == 5
    expected = explain_tokens(
        T.AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval(),
        tok,
        "w5 w9 w12",
        "w11",
        temperatures={"gelu": 0.5},
    )
    assert f"{float(expected.scores[2]):+.4g}" in out.splitlines()[3]
    assert (tmp_path / "t.html").read_text().count("<span") == 3
    assert main(["explain-text", "w5", "--model", f"hf/{tmp_path / 'lm'}", "--target", "w1 w2"]) == 2
    assert "2 tokens" in capsys.readouterr().err


def test_the_follow_ups_recipe_reaches_text():
    """recipe="semantic" (Φ gates at 0.6, attention weights held at T 1): the reference with those rules."""
    model, tok = distilbert(), tokenizer(special=True)
    got = explain_tokens(model, tok, "w5 w9 w12", 2, recipe="semantic", strict=True)
    ref = reference_scores(
        model,
        tok,
        "w5 w9 w12",
        2,
        -1,
        temperatures={"attention": 1.0},
        temperature=0.6,
        gate="normal_cdf",
        variants={"sdpa": "held"},
    )
    torch.testing.assert_close(got.scores, ref, rtol=1e-9, atol=1e-12)
    seed = explain_tokens(model, tok, "w5 w9 w12", 2)
    assert float((seed.scores - got.scores).norm()) > 1e-6 * float(got.scores.norm())


@pytest.mark.parametrize("build", ["llama", "gpt2"])
def test_the_lm_head_runs_only_where_a_target_is_and_changes_nothing(build, monkeypatch):
    """A causal LM's head is applied at each text's last real token alone (logits_to_keep), and
    the scores equal those of the full logits (the head at every position), padded batches too."""
    import pullbacks.text as text_module

    model = llama()[0] if build == "llama" else gpt2()
    tok = tokenizer()
    texts = ["w5 w9 w12 w7", "w8 w3", "w1 w2 w3 w4 w5 w6"]
    head = model.get_output_embeddings()
    seen: list[tuple[int, ...]] = []
    handle = head.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        kept = explain_tokens(model, tok, texts, "w11")
    finally:
        handle.remove()
    assert seen == [(3, 3, model.config.hidden_size)]  # three distinct last positions, not 6 of each row
    monkeypatch.setattr(text_module, "_keeps_logits", lambda model: False)
    full = explain_tokens(model, tok, texts, "w11")
    for a, b in zip(kept, full):
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("build", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["pullback", "gradient"])
def test_a_generated_continuation_equals_single_next_token_attributions_row_by_row(build, method):
    from pullbacks.text import explain_generation

    model = llama()[0] if build == "llama" else gpt2()
    tok = tokenizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompt, continuation = "w5 w9 w12", " w7 w3 w20"
    got = explain_generation(model, tok, prompt, continuation, method=method)
    words = (prompt + continuation).split()
    assert got.scores.shape == (3, 6) and got.prompt_length == 3 and [t.strip() for t in got.continuation] == words[3:]
    for i in range(3):
        single = explain_tokens(model, tok, " ".join(words[: 3 + i]), words[3 + i], method=method)
        torch.testing.assert_close(got.scores[i, : 3 + i], single.scores, rtol=1e-9, atol=1e-12)
        assert not got.scores[i, 3 + i :].any()  # causal: nothing after the position read
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    if method == "pullback":
        assert got.coverage is not None and got.coverage.complete
    greedy = explain_generation(model, tok, prompt, max_new_tokens=4, method=method)
    assert greedy.scores.shape == (4, 7)
    png = greedy._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_text_generate_writes_the_heat_map(tmp_path, capsys):
    from PIL import Image

    from pullbacks.apps.cli import main

    model, tok = gpt2(torch.float32), tokenizer()
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    out = tmp_path / "maps" / "g.png"
    code = main(["explain-text", "w5 w9 w12", "--model", f"hf/{tmp_path / 'lm'}", "--generate", "3", "--png", str(out)])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0 and printed[0].startswith("continuation: ") and printed[-1] == str(out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 200
