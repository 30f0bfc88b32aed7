"""Experiments built on the evaluation: the known-answers tables, the temperature sweeps and
figures on the trained networks, and the text task's metrics. They sit above
:mod:`pullbacks.evaluation`; the generated tasks and the trained weights they use are data
below the model registry (:mod:`pullbacks.groundtruth`)."""
