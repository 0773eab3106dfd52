"""How many signed power-of-two terms each weight needs (pure numpy).

A fixed weight ``±2^a ± 2^b`` multiplies an activation with two shifts and one
add; the term count of a value is the length of its minimal signed-digit form
(`powers_of_two.signed_digits`, the decomposition `tfmot_wfn.report` prints).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from tfmot_wfn.core.powers_of_two import signed_digits

#: A value with more terms than this is "not a sum of a few powers of two": an
#: arbitrary float32 needs about 8 on average (24-bit mantissa), WFN palette values 1-3.
DEFAULT_MAX_TERMS = 6


def term_counts(values: np.ndarray) -> np.ndarray:
    """Signed power-of-two terms of every value (0 for zeros), same shape as `values`.

    Computed once per distinct value, so a fixed network (a few dozen values) is cheap.
    """
    v = np.asarray(values, dtype=np.float64)
    unique, inverse = np.unique(v.ravel(), return_inverse=True)
    per_value = np.array([len(signed_digits(u)) if np.isfinite(u) else -1 for u in unique],
                         dtype=np.int64)
    if np.any(per_value < 0):
        raise ValueError("a weight is NaN or infinite; the hardware cost needs finite weights")
    return per_value[inverse].reshape(v.shape)


def terms_histogram(terms: np.ndarray) -> Dict[int, int]:
    """``{term count: number of non-zero weights}``."""
    t = np.asarray(terms).ravel()
    counts = np.bincount(t[t > 0]) if np.any(t > 0) else np.zeros(0, np.int64)
    return {int(k): int(c) for k, c in enumerate(counts) if k > 0 and c > 0}


def too_many_terms(values: np.ndarray, terms: np.ndarray, max_terms: int) -> Tuple[int, float]:
    """Number of non-zero weights with more than `max_terms` terms, and one such value (or nan)."""
    bad = np.asarray(terms) > max_terms
    n = int(np.count_nonzero(bad))
    return n, (float(np.asarray(values)[bad].ravel()[0]) if n else float("nan"))
