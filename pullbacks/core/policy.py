"""Coverage, the one policy: what is done about a forward pass whose coverage (:mod:`.coverage`)
is not complete, in one place for every caller:

* nothing gated at all: a ValueError (the "pullback" would be a vanilla gradient);
* something ordinary (read off the autograd graph, :mod:`.graph`): a
  :class:`PartialPullbackWarning`, once per check (a pullback, or a whole ascent), or with
  ``strict=True`` a :class:`PartialPullbackError`;
* products of two input-dependent tensors: reported, and partial only with
  ``strict="products"`` (the method's own rules keep products exact: docs/method.md);
* a reentrant activation checkpoint in a pullback's graph: a RuntimeError (the backward
  would re-run its segment ungated).

Both carry the :class:`~.coverage.Coverage`, so front ends format from it
(``coverage.summary()``), never from the message's text. ``soft_gates(strict=True)`` applies
the same check when its block exits.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from collections.abc import Iterable
from types import FrameType

from torch import Tensor

from .coverage import Coverage
from .errors import ProblemValueError
from .graph import CHECKPOINT_HELP, walk
from .rules.base import Rule
from .table import gated_summary, rules_in_effect


class PartialPullbackWarning(UserWarning):
    """Some nonlinear calls kept their ordinary gradient: the pullback is partly vanilla.
    ``.coverage`` is the :class:`Coverage` of the forward pass."""

    def __init__(self, coverage: Coverage) -> None:
        self.coverage = coverage
        super().__init__(
            f"{coverage.summary()}; strict=True makes this an error; silence it with "
            "warnings.simplefilter('ignore', pullbacks.PartialPullbackWarning)"
        )


class PartialPullbackError(RuntimeError):
    """``strict=True`` and some nonlinear calls kept their ordinary gradient.
    ``.coverage`` is the :class:`Coverage` of the forward pass."""

    def __init__(self, coverage: Coverage) -> None:
        self.coverage = coverage
        super().__init__(f"{coverage.summary()}; strict=True makes this an error, strict=False a warning")


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stacklevel() -> int:
    """The stack level of the first frame outside this package (where the warning points)."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        frame, level = frame.f_back, level + 1
    return level


_WALKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> ((structure, rules), reading)


class CoverageCheck:
    """The coverage policy for one pullback or one whole ascent (see the module docstring)."""

    def __init__(self, strict: bool | str, rules: Iterable[Rule] = ()) -> None:
        self.strict, self.rules, self.warned, self.walked = strict, tuple(rules), False, False
        self.in_effect = rules_in_effect(self.rules)

    def partial(self, coverage: Coverage) -> None:
        """Warn (once) or raise if ``strict`` when something kept its ordinary gradient (with
        ``strict="products"``, also when products were met)."""
        products = self.strict == "products" and bool(coverage.products)
        if not coverage.partial and not products:
            return
        if self.strict:
            raise PartialPullbackError(coverage)
        if not self.warned:
            self.warned = True
            warnings.warn(PartialPullbackWarning(coverage), stacklevel=_stacklevel())

    def __call__(
        self,
        coverage: Coverage,
        model_name: str,
        output: Tensor | None = None,
        gradless: int = 0,
        model: object = None,
        structure: tuple | None = None,
        inputs: tuple | None = None,
    ) -> None:
        """The whole policy after a forward pass of ``model_name`` whose result is ``output``:
        the autograd graph from ``output`` to ``inputs`` is read (:func:`walk`: on the first
        pass, and on every pass that ran gated calls without gradients) into ``coverage``.
        Given the ``model`` and its ``structure`` (its module classes, ``mode.structure``), a
        reading is remembered for that model until its structure, its training flag or the
        rules change (the walk is milliseconds of Python)."""
        if output is not None and (not self.walked or gradless):
            key = (structure, self.in_effect, getattr(model, "training", None))
            known = _WALKED.get(model) if model is not None and structure is not None and not gradless else None
            if known is not None and known[0] == key:
                reading = known[1]
            else:
                reading = walk([output], self.in_effect, inputs)
                if reading.checkpoint:
                    raise RuntimeError(CHECKPOINT_HELP)
                if model is not None and structure is not None and not gradless:
                    _WALKED[model] = (key, reading)
            coverage.ordinary.update(reading.ordinary)
            coverage.products.update(reading.products)
            self.walked = True
        if not coverage.gated and coverage.off_path:
            ran = ", ".join(f"{family} {n}" for family, n in coverage.off_path.most_common())
            raise ProblemValueError(
                f"no call that pullbacks gates lies between where the gradient starts and the output of "
                f"{model_name}: the gated calls that ran ({ran}) come before it (their inputs need no "
                "gradient), so the pullback there equals the vanilla gradient; a layer attribution (Captum's "
                "LayerGradCam on a model's last block, say) whose layer has no gate after it gives the "
                "ordinary method",
                fixes={
                    "python": "attribute to an earlier layer (one with ReLUs or other gated calls after it), or "
                    "use the ordinary method on the model itself",
                    "cli": "attribute to an earlier layer",
                    "app": "choose an earlier layer",
                },
            )
        if not coverage.gated:
            rule = "For an operator not listed, write a rule of your own (pullbacks.GateRule, docs/extending.md"
            raise ProblemValueError(
                f"no call that pullbacks gates was seen in the forward pass of {model_name} (ordinary nonlinear "
                f"calls: {coverage.describe_ordinary() or 'none'}), so the pullback would silently equal the "
                f"vanilla gradient; pullbacks gates: {gated_summary(self.rules)}",
                fixes={
                    "python": f"{rule}); for a vanilla gradient use gradient_ascent(..., method='gradient') or "
                    "torch.autograd.grad",
                    "cli": f"{rule}; --rules MODULE:NAME); for a vanilla gradient use --method gradient",
                    "app": "this model's activations have no rule; look at the vanilla gradient's column",
                },
            )
        self.partial(coverage)
