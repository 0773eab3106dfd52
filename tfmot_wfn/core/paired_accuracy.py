"""Paired accuracy statistics: a compressed model against its float model on the same examples.

```python
import numpy as np
from tfmot_wfn.core.paired_accuracy import lower_accuracy, paired_drop_se, pass_threshold

float_right = np.array([1, 1, 0, 1], bool)       # per example: the float model's answer right?
fixed_right = np.array([1, 0, 0, 1], bool)
paired_drop_se(float_right, fixed_right)          # the drop's standard error (accuracy units)
pass_threshold(0.75, 0.25)                        # the least accuracy within 0.25 of 0.75
lower_accuracy(0.75, 0.1, margin=1.0)             # 0.65: the accuracy less one standard error
chosen_run([0.01, 0.02], [0.7, 0.6], 0.65)        # 0: the largest distance that reaches 0.65
```

Both models answer the same examples, so the drop's standard error is that of the per-example
differences: far below the unpaired binomial error when the two agree on most examples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Slack for float rounding in "accuracy >= float accuracy - tolerance" (far below one example).
ROUNDING = 1e-9


def paired_drop_se(float_correct: np.ndarray, correct: np.ndarray) -> float:
    """The standard error of the accuracy drop from ``float_correct`` to ``correct`` (per
    example, the same examples in the same order): the spread of the per-example differences
    over sqrt(n). NaN when the two cover different numbers of examples, or only one."""
    if len(float_correct) != len(correct) or len(correct) < 2:
        return float("nan")
    d = np.asarray(float_correct, np.float64) - np.asarray(correct, np.float64)
    return float(np.std(d, ddof=1) / np.sqrt(d.size))


def pass_threshold(float_accuracy: float, tolerance: float) -> float:
    """The least accuracy within ``tolerance`` of ``float_accuracy``. Accuracies are ratios of
    counts: a drop of exactly ``tolerance`` (one error in 200 at 0.005) passes despite the
    rounding of the subtraction."""
    return float(float_accuracy) - float(tolerance) - ROUNDING


def lower_accuracy(accuracy: float, drop_se: float, margin: float) -> float:
    """``accuracy`` less ``margin`` standard errors of its drop (``drop_se``; NaN counts as 0):
    the accuracy a model is credited with when "within tolerance" must hold with some
    confidence (one standard error: about 84% one-sided), not only on the examples at hand.
    Compare it with `pass_threshold`; ``margin`` 0 is the plain accuracy."""
    se = 0.0 if not np.isfinite(drop_se) else float(drop_se)
    return float(accuracy) - float(margin) * se


def chosen_run(distances: Sequence[float], lower: Sequence[float], threshold: float) -> int:
    """Which run a distance search keeps: the index of the largest distance whose ``lower``
    accuracy (`lower_accuracy`) reaches ``threshold`` (`pass_threshold`), else of the highest
    ``lower`` accuracy (the first, on a tie)."""
    if not len(lower):
        raise ValueError("no run to choose from")
    passing = [i for i, value in enumerate(lower) if value >= threshold]
    if passing:
        return max(passing, key=lambda i: distances[i])
    return int(np.argmax(lower))


__all__ = ["ROUNDING", "chosen_run", "lower_accuracy", "paired_drop_se", "pass_threshold"]
