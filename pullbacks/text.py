"""Pullbacks for text: per-token scores for sequence classifiers and causal language models.

For token ids ``t_1..t_n`` embedded as ``e_i`` (the input embeddings; position embeddings
added later are not part of ``e_i``), the pullback ``g_i`` is the gradient, under soft gates,
of a target logit with respect to ``e_i``: a class of a sequence classifier, or the next
token's logit at the last position of a causal LM; a contrastive target is the target's
logit minus a foil's. Token score ``g_i · e_i`` (``score="dot"``, signed, the gradient ×
input reduction) or ``‖g_i‖₂`` (``score="norm"``). Special tokens are scored and marked.

    >>> scores = explain_tokens(model, tokenizer, "The capital of France is", " Paris")
    >>> scores                         # coloured tokens in a notebook; print(scores) in a terminal
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .core.coverage import Coverage
from .core.errors import ProblemValueError
from .core.options import GateOptions, build
from .core.policy import CoverageCheck
from .core.pullback import target_gradient

Target = int | str | None
SCORES = {"dot": "g·e, signed (the gradient × input reduction)", "norm": "‖g‖₂ (unsigned)"}
METHODS = ("pullback", "gradient")


@dataclass
class TokenScores:
    """One text's token scores: ``tokens`` (as text), ``scores`` (one per token), ``special``
    (True for the tokenizer's special tokens), the ``target`` (and ``foil``) explained and
    the ``coverage`` of the forward pass (None for the vanilla gradient) and the ``method``."""

    tokens: list[str]
    scores: Tensor
    special: list[bool]
    target: str
    foil: str | None = None
    coverage: Coverage | None = None
    method: str = "pullback"

    @property
    def label(self) -> str:
        """``target (method)``, or ``target − foil (method)``."""
        return (self.target if self.foil is None else f"{self.target} − {self.foil}") + f" ({self.method})"

    def html(self) -> str:
        """Tokens on backgrounds: red for positive scores, blue for negative, opacity ∝ |score|."""
        top = float(self.scores.abs().max()) or 1.0
        spans = []
        for tok, s, sp in zip(self.tokens, self.scores.tolist(), self.special):
            rgb = "220,40,40" if s >= 0 else "40,90,220"
            border = "border:1px dashed #888;" if sp else ""
            spans.append(
                f'<span title="{s:+.4g}" style="background:rgba({rgb},{abs(s) / top:.3f});{border}'
                f'padding:1px 2px;margin:0 1px;border-radius:3px;white-space:pre">{html.escape(tok)}</span>'
            )
        return (
            f'<div style="font-family:monospace;line-height:2"><b>{html.escape(self.label)}</b>: '
            + "".join(spans)
            + "</div>"
        )

    def _repr_html_(self) -> str:
        return self.html()

    def terminal(self) -> str:
        """The tokens on 24-bit ANSI background colours (red positive, blue negative), special
        tokens in brackets."""
        top = float(self.scores.abs().max()) or 1.0
        out = []
        for tok, s, sp in zip(self.tokens, self.scores.tolist(), self.special):
            a = abs(s) / top
            r, g, b = (255, int(255 * (1 - a)), int(255 * (1 - a))) if s >= 0 else (int(255 * (1 - a)),) * 2 + (255,)
            out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{'[' + tok + ']' if sp else tok}\x1b[0m")
        return f"{self.label}: " + "".join(out)

    def __str__(self) -> str:
        return self.terminal()

    def table(self) -> str:
        """One line per token: position, score, token (plain text)."""
        return "\n".join(
            f"{i:4d} {s:+.4g} {tok!r}{' (special)' if sp else ''}"
            for i, (tok, s, sp) in enumerate(zip(self.tokens, self.scores.tolist(), self.special))
        )


class TokenLogits(nn.Module):
    """Embeddings → the logits to explain: a classifier's, or a causal LM's at each text's last
    token; a foil's logit subtracted from every column when one is given."""

    def __init__(self, model: nn.Module, mask: Tensor, foils: Tensor | None) -> None:
        super().__init__()
        self.model, self.mask, self.foils = model, mask, foils

    def forward(self, e: Tensor) -> Tensor:
        from .core.pullback import logits_of

        last = _last_positions(self.mask)
        keep = torch.unique(last) if _keeps_logits(self.model) else None  # the LM head where a target is
        extra = {} if keep is None else {"logits_to_keep": keep}
        logits = logits_of(self.model(inputs_embeds=e, attention_mask=self.mask, **extra))
        if logits.dim() == 3:  # a language model: the next token after each text's last real token
            rows = torch.arange(logits.shape[0], device=logits.device)
            logits = logits[rows, last if keep is None else torch.searchsorted(keep, last)]
        if self.foils is not None:
            logits = logits - logits.gather(1, self.foils[:, None])
        return logits


def _keeps_logits(model: nn.Module) -> bool:
    """Whether ``model`` computes its LM head only at the positions given as ``logits_to_keep``
    (Hugging Face causal LMs): then the head runs where a target needs it, not at every token."""
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
        return False


def _last_positions(mask: Tensor) -> Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(1).values


def _padded(tokenizer: Any, texts: list[str], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Token ids, padded on the right, and the attention mask (the tokenizer is not changed, also
    when it has no pad token: padded positions are masked, their id does not matter)."""
    rows = [tokenizer(t)["input_ids"] for t in texts]
    if not all(rows):
        raise ProblemValueError("a text has no tokens: give some text", option="text")
    n = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (n - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows], device=device)
    return ids, mask


def _is_language_model(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    archs = getattr(config, "architectures", None) or [type(model).__name__]
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or type(model).__name__.endswith(
        ("ForCausalLM", "LMHeadModel")
    )


def resolve_target(model: nn.Module, tokenizer: Any, value: Target, what: str = "target") -> int | None:
    """A class (id or label of ``config.id2label``) for a classifier; a token (id, or a string that
    is exactly one token) for a language model; None stays None (the model's own choice)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and not _is_language_model(model):
        return int(value)
    if not isinstance(value, str):
        raise ProblemValueError(f"a {what} is a class id, a label or a token string, got {value!r}", option=what)
    if _is_language_model(model):
        ids = tokenizer.encode(value, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [tokenizer.decode([i]) for i in ids]
            hint = f"; with a leading space, {' ' + value.strip()!r}?" if not value.startswith(" ") else ""
            raise ProblemValueError(
                f"the {what} {value!r} is {len(ids)} tokens {pieces}, not one: name a single token (or its id){hint}",
                option=what,
                value=value,
            )
        return ids[0]
    labels = {str(v).lower(): int(k) for k, v in (getattr(model.config, "id2label", None) or {}).items()}
    if value.lower() in labels:
        return labels[value.lower()]
    raise ProblemValueError(
        f"unknown {what} {value!r}: the model's labels are {sorted(labels)} (or a class id)", option=what, value=value
    )


def _name(model: nn.Module, tokenizer: Any, i: int) -> str:
    if _is_language_model(model):
        return repr(tokenizer.decode([i]))
    labels = getattr(model.config, "id2label", None) or {}
    return str(labels.get(i, labels.get(str(i), i)))


def explain_tokens(
    model: nn.Module,
    tokenizer: Any,
    text: str | Sequence[str],
    target: Target = None,
    *,
    foil: Target = None,
    score: str = "dot",
    method: str = "pullback",
    options: GateOptions | None = None,
    **overrides: Any,
) -> TokenScores | list[TokenScores]:
    """Per-token scores of ``text`` (one string, or a list: batched) for ``target``.

    ``target``: a class id or label (sequence classifier) or the next token (causal LM: an id or
    a string that is one token); None: the model's own top choice. ``foil``: explain
    ``target − foil`` instead. ``score``: ``"dot"`` (``g_i · e_i``) or ``"norm"`` (``‖g_i‖₂``).
    ``method``: ``"pullback"`` or ``"gradient"`` (vanilla). Gate options as for images
    (``temperatures={"gelu": 0.5}``, ``recipe="semantic"``, ``rules=[...]``, ``strict=True``).
    The model (eval mode) is never modified; its coverage is checked as for images.
    """
    if score not in SCORES:
        raise ProblemValueError(f"unknown score {score!r}: one of {', '.join(SCORES)}", option="score", value=score)
    if method not in METHODS:
        raise ProblemValueError(
            f"unknown method {method!r}: one of {', '.join(METHODS)}", option="method", value=method
        )
    if model.training:
        raise ProblemValueError(
            "the model is in training mode (dropout would make each pass random): call model.eval() first",
            option="model",
        )
    texts = [text] if isinstance(text, str) else list(text)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ProblemValueError(f"text must be a string or a non-empty list of strings, got {text!r}", option="text")
    gates = build(GateOptions, options, overrides) if method == "pullback" else None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids, mask = _padded(tokenizer, texts, device)
    t, f = resolve_target(model, tokenizer, target), resolve_target(model, tokenizer, foil, "foil")
    with torch.no_grad():
        e = model.get_input_embeddings()(ids)  # type: ignore[operator]  # a Hugging Face model's method
        if t is None:
            t_ids = TokenLogits(model, mask, None)(e).argmax(1)
        else:
            t_ids = torch.full((len(texts),), t, device=device)
    foils = None if f is None else torch.full((len(texts),), f, device=device)
    coverage: list = []
    g = token_gradient(model, e, mask, t_ids, gates, foils, coverage)
    values = reduce(g, e, score)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = []
    for row in range(len(texts)):
        keep = mask[row].bool()
        row_ids = ids[row][keep].tolist()
        out.append(
            TokenScores(
                tokens=[tokenizer.decode([i]) for i in row_ids],
                scores=values[row][keep].detach().cpu(),
                special=[i in special for i in row_ids],
                target=_name(model, tokenizer, int(t_ids[row])),
                foil=None if f is None else _name(model, tokenizer, f),
                coverage=coverage[0] if coverage else None,
                method=method,
            )
        )
    return out[0] if isinstance(text, str) else out


def token_gradient(
    model: nn.Module,
    embeddings: Tensor,
    mask: Tensor,
    targets: Tensor,
    gates: GateOptions | None,
    foils: Tensor | None = None,
    coverage: list | None = None,
) -> Tensor:
    """``g = d logit_target / d e`` for each row of ``embeddings`` (N, n, d) under ``gates`` (None:
    the vanilla gradient); ``coverage``, a list, receives the forward pass's coverage."""
    check = None
    if gates is not None:
        check = _Recording(CoverageCheck(gates.strict, gates.rules), [] if coverage is None else coverage)
    return target_gradient(TokenLogits(model, mask, foils), embeddings, targets, gates, check)


def reduce(g: Tensor, e: Tensor, score: str = "dot") -> Tensor:
    """Per-token scores: ``g_i · e_i`` (``"dot"``) or ``‖g_i‖₂`` (``"norm"``)."""
    return (g * e).sum(-1) if score == "dot" else g.norm(dim=-1)


class _Recording(CoverageCheck):
    """A coverage check that keeps the coverage it checked."""

    def __init__(self, check: CoverageCheck, into: list) -> None:
        super().__init__(check.strict, check.rules)
        self.into = into

    def __call__(self, coverage: Coverage, *args: Any, **kwargs: Any) -> None:
        self.into.append(coverage)
        super().__call__(coverage, *args, **kwargs)


# --------------------------------------------------------------------------- a generated continuation


@dataclass
class GenerationScores:
    """The attribution of each token of a continuation to every token before it: ``scores`` is
    ``k × n`` (row ``i``: the scores of all ``n`` tokens for the logit of continuation token
    ``i`` at the position before it; zero from that position on), ``tokens`` the ``n`` tokens
    as text, ``prompt_length`` where the continuation starts, ``coverage`` of the forward pass."""

    tokens: list[str]
    scores: Tensor
    prompt_length: int
    coverage: Coverage | None = None
    method: str = "pullback"
    score: str = "dot"

    @property
    def continuation(self) -> list[str]:
        """The ``k`` continuation tokens, as text."""
        return self.tokens[self.prompt_length :]

    def figure(self, width: float | None = None) -> Any:
        """A heat map: continuation tokens down, every token across, red positive and blue
        negative, each row scaled to its own largest magnitude."""
        import matplotlib.pyplot as plt

        k, n = self.scores.shape
        rows = self.scores / self.scores.abs().amax(1, keepdim=True).clamp_min(1e-30)
        fig, ax = plt.subplots(figsize=(width or max(4.0, 0.35 * n + 1.5), max(2.0, 0.35 * k + 1.2)))
        ax.imshow(rows.numpy(), cmap="bwr", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(n), [repr(t)[1:-1] for t in self.tokens], rotation=90, fontsize=8, family="monospace")
        ax.set_yticks(range(k), [repr(t)[1:-1] for t in self.continuation], fontsize=8, family="monospace")
        ax.axvline(self.prompt_length - 0.5, color="black", linewidth=0.8)
        ax.set_xlabel("token attributed to")
        ax.set_ylabel("generated token")
        short = {"dot": "g·e", "norm": "‖g‖"}[self.score]
        ax.set_title(f"{self.method} ({short}); each row scaled to its largest |score|", fontsize=9)
        fig.tight_layout()
        return fig

    def _repr_png_(self) -> bytes:
        from io import BytesIO

        import matplotlib.pyplot as plt

        fig = self.figure()
        buffer = BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        return buffer.getvalue()


def explain_generation(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    continuation: str | None = None,
    *,
    max_new_tokens: int = 16,
    score: str = "dot",
    method: str = "pullback",
    options: GateOptions | None = None,
    progress: bool = False,
    **overrides: Any,
) -> GenerationScores:
    """Each token of a continuation of ``prompt`` attributed to every token before it: a ``k × n``
    matrix from one forward pass (teacher-forced) and ``k`` backward passes.

    ``continuation``: the text that follows the prompt (its tokens are appended to the prompt's);
    None: the model's greedy continuation of ``max_new_tokens`` tokens. Row ``i`` is what
    :func:`explain_tokens` gives for the prompt and the first ``i`` continuation tokens with the
    next one as the target. Causal language models only; options as for :func:`explain_tokens`.
    """
    from tqdm.auto import tqdm

    from .core.checks import check_model
    from .core.mode import SoftGateMode

    if not _is_language_model(model):
        raise ProblemValueError("explain_generation needs a causal language model (…ForCausalLM)", option="model")
    if score not in SCORES:
        raise ProblemValueError(f"unknown score {score!r}: one of {', '.join(SCORES)}", option="score", value=score)
    if method not in METHODS:
        raise ProblemValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}", option="method")
    check_model(model)
    gates = build(GateOptions, options, overrides) if method == "pullback" else None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    prompt_ids = tokenizer(prompt)["input_ids"]
    if not prompt_ids:
        raise ProblemValueError("the prompt has no tokens: give some text", option="prompt")
    if continuation is None:
        with torch.no_grad():
            start = torch.tensor([prompt_ids], device=device)
            made = model.generate(  # type: ignore[operator]  # a Hugging Face model's method
                start, attention_mask=torch.ones_like(start), max_new_tokens=max_new_tokens, do_sample=False
            )
        new_ids = made[0, len(prompt_ids) :].tolist()
    else:
        new_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not new_ids:
        raise ProblemValueError("the continuation has no tokens", option="continuation")
    ids = torch.tensor([prompt_ids + new_ids], device=device)
    mask = torch.ones_like(ids)
    k, p = len(new_ids), len(prompt_ids)
    positions = torch.arange(p - 1, p - 1 + k, device=device)  # the logit of token i+1 is read at i
    with torch.no_grad():
        e = model.get_input_embeddings()(ids)  # type: ignore[operator]  # a Hugging Face model's method
    x = e.detach().requires_grad_(True)
    extra = {"logits_to_keep": positions} if _keeps_logits(model) else {}
    coverage = None
    with torch.enable_grad():
        if gates is None:
            logits = model(inputs_embeds=x, attention_mask=mask, **extra).logits
        else:
            mode = SoftGateMode(gates, refuse_random=True, model=model)
            mode.wrt = (x,)
            with mode:
                logits = model(inputs_embeds=x, attention_mask=mask, **extra).logits
            coverage = mode.coverage
            CoverageCheck(gates.strict, gates.rules)(
                coverage, type(model).__name__, logits, mode.gradless, model, mode.structure, mode.wrt
            )
        at = torch.arange(k, device=device) if extra else positions
        chosen = logits[0, at, torch.tensor(new_ids, device=device)]
        rows = []
        for i in tqdm(range(k), desc="generated tokens", disable=not progress, leave=False):
            (g,) = torch.autograd.grad(chosen[i], x, retain_graph=i < k - 1)
            rows.append(reduce(g, x.detach(), score)[0])
    return GenerationScores(
        tokens=[tokenizer.decode([i]) for i in ids[0].tolist()],
        scores=torch.stack(rows).detach().cpu(),
        prompt_length=p,
        coverage=coverage,
        method=method,
        score=score,
    )
