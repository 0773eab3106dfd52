"""Counting NaN and Inf values (pure numpy): the one finiteness check of the package.

Every place that refuses non-finite weights (`fix_weights`, the fixing stage,
`UpdateFixingStep(check_finite=True)`, `core.fixing_stage`) counts them with
`count_nonfinite` and raises its own error, worded for its caller.
"""

from __future__ import annotations

import numpy as np


def count_nonfinite(values) -> int:
    """Number of NaN, +Inf and -Inf entries of `values` (any shape; 0 for integers)."""
    array = np.asarray(values)
    if array.dtype.kind in "biu":  # booleans and integers are always finite
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))
