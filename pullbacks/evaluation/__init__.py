"""Is it faithful? Sanity checks and faithfulness metrics for pullbacks against gradient
baselines (``pullbacks evaluate`` on the command line).

    from pullbacks.evaluation import evaluate, Settings
    result = evaluate(model, images, targets, settings=Settings(ascent=AscentOptions(temperature=1.0)))
    print(result.table()); result.save("out/evaluation")

Methods (``METHODS``): the excitation pullback, pullback ascent (``x_5 - x_0``), the vanilla
gradient, gradient ascent, and Captum's Input × Gradient, SmoothGrad and Integrated
Gradients. Metrics (``METRICS``): see :mod:`pullbacks.evaluation.metrics`. Adapters for
other libraries: :mod:`pullbacks.evaluation.captum` (``ExcitationPullback``, ``Ascent``) and
:mod:`pullbacks.evaluation.quantus` (``explain_func``); both need
``pip install 'pullbacks[evaluate]'``.
"""

from .evaluate import EVIDENCE, METRICS, Metric, evaluate
from .methods import DEFAULT_METHODS, METHODS, PAIRS, Method, Settings, attribute
from .report import COLUMNS, Evaluation

__all__ = [
    "evaluate",
    "Settings",
    "Evaluation",
    "attribute",
    "METHODS",
    "DEFAULT_METHODS",
    "METRICS",
    "EVIDENCE",
    "COLUMNS",
    "PAIRS",
    "Metric",
    "Method",
]
